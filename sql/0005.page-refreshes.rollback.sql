DROP INDEX projects_not_found_by_age;
DROP TABLE page_refreshes;
