-- Featurizing files and whole tables.

CREATE FUNCTION imgfeat.featurize_image_file(path text, model_name text DEFAULT 'resnet18', resize text DEFAULT NULL)
RETURNS real[]
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE COST 10000
SET search_path = pg_catalog, pg_temp
AS $$
if "imgfeat" not in GD:
    plpy.execute("SELECT imgfeat_internal.bootstrap()")
return GD["imgfeat"].featurize_image_file(plpy, path, model_name, resize)
$$;
COMMENT ON FUNCTION imgfeat.featurize_image_file(text, text, text) IS
'The feature vector (real[]) of an image file on the database server, as imgfeat.featurize_image. path: relative to imgfeat.image_root, or absolute inside it. The file is opened one path component at a time from the root''s directory, following a symlink only where its target stays inside the root, and what was opened is checked to lie inside the root before it is read: no path, symlink or concurrent rename leads outside. Refused: no root configured, or one set by a session (SQLSTATE 55000); a path outside the root, a directory, device or other non-regular file, or a caller that is neither a member of imgfeat_file_reader nor of pg_read_server_files (42501). NULL path gives NULL. VOLATILE: files can change.';

CREATE TABLE imgfeat.featurize_errors (
    source       regclass NOT NULL,
    id           text NOT NULL,
    model_name   text NOT NULL,
    error_class  text NOT NULL,
    message      text NOT NULL,
    failed_at    timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX ON imgfeat.featurize_errors (source, model_name, id);
COMMENT ON TABLE imgfeat.featurize_errors IS
'Images that CALL imgfeat.featurize(..., on_error => ''skip'') could not featurize: the source table, the row''s id as text, the model, the error class (e.g. image_decode_error, image_too_large_error, file_access_error) and a message a person can act on. A row is removed when a later run featurizes that id.';

CREATE TABLE imgfeat.featurize_jobs (
    job_id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source            regclass NOT NULL,
    target            text NOT NULL,
    model_name        text NOT NULL,
    status            text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'done')),
    rows_total        bigint NOT NULL,
    rows_done         bigint NOT NULL DEFAULT 0,
    rows_failed       bigint NOT NULL DEFAULT 0,
    images_per_second float8,
    timings           jsonb,
    pid               integer NOT NULL DEFAULT pg_catalog.pg_backend_pid(),
    started_by        name NOT NULL DEFAULT current_user,
    started_at        timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    updated_at        timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    finished_at       timestamptz
);
COMMENT ON TABLE imgfeat.featurize_jobs IS
'One row per CALL imgfeat.featurize, updated and committed after every batch. A job whose status is running but whose pid is gone was interrupted; call the procedure again to resume.';

CREATE TABLE imgfeat_internal.job_locks (
    source      regclass NOT NULL,
    target      regclass NOT NULL,
    model_name  text NOT NULL,
    lock_key    bigint NOT NULL DEFAULT ('x' || pg_catalog.substr(pg_catalog.md5(pg_catalog.gen_random_uuid()::pg_catalog.text), 1, 16))::pg_catalog.bit(64)::bigint,
    PRIMARY KEY (source, target, model_name)
);
COMMENT ON TABLE imgfeat_internal.job_locks IS
'Internal. The advisory-lock key of each featurize job (source, target, model): 64 random bits, readable and created only by roles that may read the source (row-level security), so no other role can take the lock first and block the job.';

CREATE VIEW imgfeat.featurize_progress AS
SELECT j.job_id, j.source, j.target, j.model_name,
       CASE WHEN j.status = 'running' AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a WHERE a.pid = j.pid)
            THEN 'interrupted' ELSE j.status END AS status,
       j.rows_done, j.rows_failed, j.rows_total,
       round(100.0 * (j.rows_done + j.rows_failed) / GREATEST(j.rows_total, 1), 1) AS percent,
       round(j.images_per_second::numeric, 1) AS images_per_second,
       CASE WHEN j.status = 'running' AND j.images_per_second > 0
            THEN pg_catalog.make_interval(secs => (j.rows_total - j.rows_done - j.rows_failed) / j.images_per_second) END AS eta,
       j.timings, j.started_by, j.started_at, j.updated_at, j.finished_at, j.pid
FROM imgfeat.featurize_jobs j;
COMMENT ON VIEW imgfeat.featurize_progress IS
'Progress of featurize jobs, readable from another session while a job runs: rows done/failed/total, percent, images per second, ETA; status running | done | interrupted (its backend is gone).';

CREATE PROCEDURE imgfeat.featurize(
    source regclass,
    target text,
    model_name text DEFAULT 'resnet18',
    id_column text DEFAULT 'id',
    image_column text DEFAULT 'image',
    batch_size integer DEFAULT 32,
    on_error text DEFAULT 'raise'
)
LANGUAGE plpython3u
AS $$
if "imgfeat" not in GD:
    plpy.execute("SELECT imgfeat_internal.bootstrap()")
GD["imgfeat"].featurize_table(plpy, source, target, model_name, id_column, image_column, batch_size, on_error)
$$;
COMMENT ON PROCEDURE imgfeat.featurize(regclass, text, text, text, text, integer, text) IS
'Featurizes every row of source into target (created if missing: id <source id type>, model_name text, features real[], featurized_at; primary key (id, model_name)). image_column is bytea (image bytes) or text (paths under imgfeat.image_root; reading files needs membership in imgfeat_file_reader or pg_read_server_files). Rows go through onnxruntime in batches of batch_size (1..4096), each batch committed: interrupted jobs keep their work, and calling again does only the rows not yet done (one row per id and model). on_error: raise (stop with an ERROR naming the id) | skip (record in imgfeat.featurize_errors and go on). Progress: NOTICEs every 10 s and imgfeat.featurize_progress. Call it outside an explicit transaction block (it commits). Runs with the caller''s rights; identifiers are quoted.';
