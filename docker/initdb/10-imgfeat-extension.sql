-- imgfeat Docker image, first start: the extension in the default database (POSTGRES_DB).
-- Run by the postgres image's entrypoint (docker_process_sql: psql -v ON_ERROR_STOP=1 as
-- POSTGRES_USER, a superuser) only when the data directory is new. CASCADE creates plpython3u.
CREATE EXTENSION IF NOT EXISTS imgfeat CASCADE;
