DROP TABLE upstream_successes;
DROP TABLE upstream_errors;
DROP TABLE traffic_projects;
DROP TABLE traffic_minutes;
