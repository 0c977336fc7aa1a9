DROP TABLE page_renderings;
