DROP TABLE file_downloads;
