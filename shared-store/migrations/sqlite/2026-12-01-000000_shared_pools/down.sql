DROP TABLE grants;
DROP TABLE pools;
