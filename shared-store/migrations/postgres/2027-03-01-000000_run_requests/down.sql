DROP TABLE run_requests;
