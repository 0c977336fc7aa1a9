DROP TABLE project_lists;
DROP TABLE files;
DROP TABLE projects;
