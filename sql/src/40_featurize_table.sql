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
'The feature vector (real[]) of an image file on the database server, as imgfeat.featurize_image. path: relative to imgfeat.image_root, or absolute inside it. The file is opened one path component at a time from the root''s directory, following a symlink only where its target stays inside the root, and what was opened is checked to lie inside the root before it is read: no path, symlink or concurrent rename leads outside. Refused: no root configured, or one set by a session (SQLSTATE 55000); a path outside the root, a directory, device or other non-regular file, or a caller that is neither a member of imgfeat_file_reader nor of pg_read_server_files (SQLSTATE 42501). NULL path gives NULL. VOLATILE: files can change.';

CREATE TABLE imgfeat.featurize_errors (
    source       regclass NOT NULL,
    id           text NOT NULL,
    model_name   text NOT NULL,
    error_class  text NOT NULL,
    message      text NOT NULL,
    failed_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    target       regclass
);
ALTER TABLE imgfeat.featurize_errors ADD CONSTRAINT featurize_errors_key UNIQUE NULLS NOT DISTINCT (source, model_name, id, target);
COMMENT ON TABLE imgfeat.featurize_errors IS
'Images that CALL imgfeat.featurize(..., on_error => ''skip'') (or imgfeat spark featurize --on-error skip) could not featurize: the source table, the target table, the row''s id as text, the model, the error class (e.g. image_decode_error, image_too_large_error, file_access_error) and a message a person can act on. One row per (source, target, model, id): the latest failure; removed when a later run featurizes that id. Visible to the roles that may read the source; written only by imgfeat''s jobs.';
COMMENT ON COLUMN imgfeat.featurize_errors.target IS 'The job''s target table (NULL for failures recorded before imgfeat 0.3.0).';

CREATE TABLE imgfeat.featurize_jobs (
    job_id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source            regclass NOT NULL,
    target            text NOT NULL,
    model_name        text NOT NULL,
    status            text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'done', 'failed')),
    rows_total        bigint NOT NULL,
    rows_done         bigint NOT NULL DEFAULT 0,
    rows_failed       bigint NOT NULL DEFAULT 0,
    images_per_second float8,
    timings           jsonb,
    pid               integer NOT NULL DEFAULT pg_catalog.pg_backend_pid(),
    started_by        name NOT NULL DEFAULT current_user,
    started_at        timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    updated_at        timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    finished_at       timestamptz,
    error             text
);
COMMENT ON TABLE imgfeat.featurize_jobs IS
'One row per CALL imgfeat.featurize, updated and committed after every batch: status running | done | failed (error says why). A job whose status is running but whose backend is gone was interrupted; call the procedure again to resume. Written only by the backend running the job (imgfeat_internal.start_job, update_job).';

CREATE TABLE imgfeat_internal.job_locks (
    source      regclass NOT NULL,
    target      regclass NOT NULL,
    model_name  text NOT NULL,
    lock_key    bigint NOT NULL DEFAULT ('x' || pg_catalog.substr(pg_catalog.md5(pg_catalog.gen_random_uuid()::pg_catalog.text), 1, 16))::pg_catalog.bit(64)::bigint,
    PRIMARY KEY (source, target, model_name)
);
COMMENT ON TABLE imgfeat_internal.job_locks IS
'Internal. The advisory-lock key of each featurize job (source, target, model): 64 random bits, handed out by imgfeat_internal.job_lock_key only to roles that may read the source and write the target, so no other role can take the lock first and block the job. A key shows in pg_locks while a job holds it; one found held by a backend that is not running the job is replaced by a fresh random key (imgfeat_internal.job_lock_key_definer).';

-- Writes to the shared job tables go through SECURITY DEFINER functions (owner imgfeat_definer):
-- analysts hold no UPDATE or DELETE on shared tables, which in PostgreSQL would let them LOCK a
-- table in ACCESS EXCLUSIVE mode and stall everyone. Each checks that its caller may run the job:
-- read the source and insert into the target.
--
-- Who the caller is. Inside a SECURITY DEFINER function current_user is the function's owner,
-- and neither the session's role nor SESSION_USER is the role whose code made the call: an
-- analyst's index expression runs as the analyst inside a superuser's ANALYZE (or autovacuum),
-- and a SECURITY DEFINER function of bob's runs as bob inside alice's session. So the caller
-- proves itself: a SECURITY INVOKER wrapper (imgfeat_internal.job_lock_key, ..., imgfeat.drop_classifier)
-- inserts a row into imgfeat_internal.caller_proofs, whose row-level security lets a role insert
-- only a row naming itself (current_user at the call site, which PostgreSQL checks), its backend
-- and its transaction; then it calls the SECURITY DEFINER half (*_definer), which consumes that
-- row (imgfeat_internal.caller()) and acts for the role named in it. The insert and the call are
-- one statement of the wrapper, so a failing call takes its proof with it; analysts may only
-- INSERT there (which allows no lock but ROW EXCLUSIVE, blocking no reader), and neither read
-- nor delete anyone's proof.

CREATE TABLE imgfeat_internal.caller_proofs (
    backend_pid  integer NOT NULL DEFAULT pg_catalog.pg_backend_pid(),
    xid          xid8 NOT NULL DEFAULT pg_catalog.pg_current_xact_id(),
    role         name NOT NULL DEFAULT current_user
);
CREATE INDEX caller_proofs_backend_xid ON imgfeat_internal.caller_proofs (backend_pid, xid);
COMMENT ON TABLE imgfeat_internal.caller_proofs IS
'Internal. Proofs of who calls the SECURITY DEFINER writers: (backend_pid, xid, role), one row inserted by the caller''s SECURITY INVOKER wrapper right before the call, and deleted by imgfeat_internal.caller() in it. Row-level security, and for roles that bypass it the trigger caller_proofs_check (imgfeat_internal.check_caller_proof, SQLSTATE 42501), let a role (imgfeat_user: INSERT only) insert only a row with role = current_user, its own backend and its own transaction; only imgfeat_definer reads or deletes rows, those of its own backend and transaction. No unique key: an insert never waits for another.';

-- Row-level security does not bind roles with BYPASSRLS (nor the table's owner): the trigger
-- holds every inserted proof to the same rule.
CREATE FUNCTION imgfeat_internal.check_caller_proof() RETURNS trigger
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.role IS DISTINCT FROM current_user OR NEW.backend_pid IS DISTINCT FROM pg_catalog.pg_backend_pid()
       OR NEW.xid IS DISTINCT FROM pg_catalog.pg_current_xact_id() THEN
        RAISE EXCEPTION 'imgfeat: a caller proof names only current_user, this backend and this transaction'
            USING ERRCODE = '42501';
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION imgfeat_internal.check_caller_proof() IS
'Internal. BEFORE INSERT trigger of imgfeat_internal.caller_proofs: raises SQLSTATE 42501 for a row whose role is not current_user, or whose backend_pid or xid are not this backend''s and this transaction''s (also for roles that bypass row-level security).';
CREATE TRIGGER caller_proofs_check BEFORE INSERT ON imgfeat_internal.caller_proofs
    FOR EACH ROW EXECUTE FUNCTION imgfeat_internal.check_caller_proof();

CREATE FUNCTION imgfeat_internal.caller() RETURNS name
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    who name[];
BEGIN
    WITH used AS (
        DELETE FROM imgfeat_internal.caller_proofs p
         WHERE p.backend_pid = pg_catalog.pg_backend_pid() AND p.xid = pg_catalog.pg_current_xact_id()
        RETURNING p.role
    )
    SELECT pg_catalog.array_agg(u.role) INTO who FROM used u;
    IF pg_catalog.cardinality(who) IS DISTINCT FROM 1 THEN
        RAISE EXCEPTION 'imgfeat: the caller of this function is not proven (% proofs in this transaction)',
            COALESCE(pg_catalog.cardinality(who), 0)
            USING ERRCODE = '42501',
                  HINT = 'Call the SECURITY INVOKER wrapper (imgfeat.drop_classifier, imgfeat_internal.store_classifier, ...), not its *_definer half.';
    END IF;
    RETURN who[1];
END
$$;
COMMENT ON FUNCTION imgfeat_internal.caller() IS
'Internal, for the SECURITY DEFINER writers (*_definer): the role that called them, i.e. current_user where the SECURITY INVOKER wrapper ran, read from (and deleting) the one row of imgfeat_internal.caller_proofs of this backend and transaction. No such row, or more than one (code of several roles proving itself in one transaction), raises SQLSTATE 42501. The session''s role (SET ROLE, SESSION_USER) is never trusted: an index expression run by a superuser''s ANALYZE, or another role''s SECURITY DEFINER function, is proven as the role whose code it is.';

CREATE FUNCTION imgfeat_internal.check_job_rights(who name, source regclass, target regclass) RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- IS NOT TRUE: a NULL role, source or target makes a privilege test NULL, never a pass
    IF pg_catalog.has_table_privilege(who, source, 'SELECT') IS NOT TRUE
       OR pg_catalog.has_table_privilege(who, target, 'INSERT') IS NOT TRUE THEN
        RAISE EXCEPTION 'imgfeat: % may not run a featurize job from % into %', who, source, target
            USING ERRCODE = '42501', HINT = 'A job needs SELECT on its source and INSERT on its target.';
    END IF;
END
$$;
COMMENT ON FUNCTION imgfeat_internal.check_job_rights(name, regclass, regclass) IS
'Internal. Raises SQLSTATE 42501 (insufficient_privilege) unless the role who (the proven caller, imgfeat_internal.caller()) may read source and insert into target; a NULL role, source or target never passes.';

CREATE FUNCTION imgfeat_internal.job_lock_key(source regclass, target regclass, model_name text) RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO imgfeat_internal.caller_proofs DEFAULT VALUES;
    RETURN imgfeat_internal.job_lock_key_definer(source, target, model_name);
END
$$;
COMMENT ON FUNCTION imgfeat_internal.job_lock_key(regclass, regclass, text) IS
'Internal. The advisory-lock key of the featurize job (source, target, model_name) for the caller (SECURITY INVOKER: proves the caller, then calls imgfeat_internal.job_lock_key_definer). NULL while another session is starting the same job. SQLSTATE 42501 for a caller that may not run the job.';

CREATE FUNCTION imgfeat_internal.job_lock_key_definer(source regclass, target regclass, model_name text) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    who name := imgfeat_internal.caller();
    key bigint;
BEGIN
    PERFORM imgfeat_internal.check_job_rights(who, source, target);
    INSERT INTO imgfeat_internal.job_locks AS l (source, target, model_name) VALUES (source, target, model_name)
        ON CONFLICT DO NOTHING;
    -- the row stays locked until the caller's transaction ends: a job takes its advisory lock
    -- and records itself in featurize_jobs (start_job) before it commits, so a second caller
    -- never sees the lock held by a job not yet recorded
    BEGIN
        SELECT l.lock_key INTO key FROM imgfeat_internal.job_locks l
         WHERE l.source = job_lock_key_definer.source AND l.target = job_lock_key_definer.target
           AND l.model_name = job_lock_key_definer.model_name
           FOR UPDATE NOWAIT;
    EXCEPTION WHEN lock_not_available THEN
        RETURN NULL;  -- another session is starting this job right now
    END;
    -- The key shows in pg_locks (to every role) while a job holds it. Held by a backend that is
    -- not running this job (the latest recorded run, status running, that pid), it was read
    -- there and taken by someone else: the job gets a fresh random key, and the old one is
    -- worth nothing.
    IF EXISTS (
        SELECT FROM pg_catalog.pg_locks k
         WHERE k.locktype = 'advisory' AND k.granted AND k.objsubid = 1
           AND k.database = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())
           AND ((k.classid::pg_catalog.int8 << 32) | k.objid::pg_catalog.int8) = key
           AND k.pid <> pg_catalog.pg_backend_pid()
           AND NOT EXISTS (
               SELECT FROM imgfeat.featurize_jobs j
                WHERE j.job_id = (SELECT pg_catalog.max(r.job_id) FROM imgfeat.featurize_jobs r
                                   WHERE r.source = job_lock_key_definer.source
                                     AND r.target = job_lock_key_definer.target::pg_catalog.text
                                     AND r.model_name = job_lock_key_definer.model_name)
                  AND j.pid = k.pid AND j.status = 'running'))
    THEN
        UPDATE imgfeat_internal.job_locks l SET lock_key = DEFAULT
         WHERE l.source = job_lock_key_definer.source AND l.target = job_lock_key_definer.target
           AND l.model_name = job_lock_key_definer.model_name
        RETURNING l.lock_key INTO key;
    END IF;
    RETURN key;
END
$$;
COMMENT ON FUNCTION imgfeat_internal.job_lock_key_definer(regclass, regclass, text) IS
'Internal, called by imgfeat_internal.job_lock_key. The advisory-lock key of the featurize job (source, target, model_name), made on first use: 64 random bits, given only to a proven caller that may run the job (else SQLSTATE 42501). Keys show in pg_locks while held: a key held by a backend that is not running this job (the latest run in imgfeat.featurize_jobs, status running, that pid) is replaced by a fresh random one, so a key read there blocks nothing. The job''s row in imgfeat_internal.job_locks stays locked until the caller''s transaction ends; NULL while another session holds it (that session is starting the job).';

CREATE FUNCTION imgfeat_internal.start_job(source regclass, target regclass, model_name text, rows_total bigint) RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO imgfeat_internal.caller_proofs DEFAULT VALUES;
    RETURN imgfeat_internal.start_job_definer(source, target, model_name, rows_total);
END
$$;
COMMENT ON FUNCTION imgfeat_internal.start_job(regclass, regclass, text, bigint) IS
'Internal. Records a featurize job run by this backend for the caller and returns its job_id (SECURITY INVOKER: proves the caller, then calls imgfeat_internal.start_job_definer). SQLSTATE 42501 for a caller that may not run the job.';

CREATE FUNCTION imgfeat_internal.start_job_definer(source regclass, target regclass, model_name text, rows_total bigint) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    who name := imgfeat_internal.caller();
    id bigint;
BEGIN
    PERFORM imgfeat_internal.check_job_rights(who, source, target);
    INSERT INTO imgfeat.featurize_jobs (source, target, model_name, rows_total, started_by)
    VALUES (source, target::text, model_name, rows_total, who)
    RETURNING job_id INTO id;
    RETURN id;
END
$$;
COMMENT ON FUNCTION imgfeat_internal.start_job_definer(regclass, regclass, text, bigint) IS
'Internal, called by imgfeat_internal.start_job. Records a featurize job run by this backend for the proven caller (who may run it, else SQLSTATE 42501) and returns its job_id.';

CREATE FUNCTION imgfeat_internal.update_job(
    job_id bigint, rows_done bigint, rows_failed bigint, images_per_second float8, status text, timings jsonb, error text
) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO imgfeat_internal.caller_proofs DEFAULT VALUES;
    PERFORM imgfeat_internal.update_job_definer(job_id, rows_done, rows_failed, images_per_second, status, timings, error);
END
$$;
COMMENT ON FUNCTION imgfeat_internal.update_job(bigint, bigint, bigint, float8, text, jsonb, text) IS
'Internal. Updates the progress of a featurize job (SECURITY INVOKER: proves the caller, then calls imgfeat_internal.update_job_definer); only the backend that runs it, as the role that started it, may (else SQLSTATE 42501).';

CREATE FUNCTION imgfeat_internal.update_job_definer(
    job_id bigint, rows_done bigint, rows_failed bigint, images_per_second float8, status text, timings jsonb, error text
) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    who name := imgfeat_internal.caller();
BEGIN
    UPDATE imgfeat.featurize_jobs j
       SET rows_done = update_job_definer.rows_done, rows_failed = update_job_definer.rows_failed,
           images_per_second = update_job_definer.images_per_second, status = update_job_definer.status,
           timings = update_job_definer.timings, error = update_job_definer.error, updated_at = pg_catalog.clock_timestamp(),
           finished_at = CASE WHEN update_job_definer.status = 'running' THEN NULL ELSE pg_catalog.clock_timestamp() END
     WHERE j.job_id = update_job_definer.job_id AND j.pid = pg_catalog.pg_backend_pid() AND j.started_by = who;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'imgfeat: job % is not run by this session', update_job_definer.job_id USING ERRCODE = '42501';
    END IF;
END
$$;
COMMENT ON FUNCTION imgfeat_internal.update_job_definer(bigint, bigint, bigint, float8, text, jsonb, text) IS
'Internal, called by imgfeat_internal.update_job. Updates the progress of a featurize job; only the backend that runs it, as the proven role that started it, may (else SQLSTATE 42501).';

CREATE FUNCTION imgfeat_internal.record_errors(
    source regclass, target regclass, model_name text, ids text[], error_classes text[], messages text[]
) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO imgfeat_internal.caller_proofs DEFAULT VALUES;
    PERFORM imgfeat_internal.record_errors_definer(source, target, model_name, ids, error_classes, messages);
END
$$;
COMMENT ON FUNCTION imgfeat_internal.record_errors(regclass, regclass, text, text[], text[], text[]) IS
'Internal. Records the failures of a featurize job (one row per source, target, model and id: the latest), for a caller that may run the job (SECURITY INVOKER: proves the caller, then calls imgfeat_internal.record_errors_definer; else SQLSTATE 42501).';

CREATE FUNCTION imgfeat_internal.record_errors_definer(
    source regclass, target regclass, model_name text, ids text[], error_classes text[], messages text[]
) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    who name := imgfeat_internal.caller();
BEGIN
    PERFORM imgfeat_internal.check_job_rights(who, source, target);
    -- the ids' earlier failures of this job, as imgfeat_internal.clear_errors_definer
    DELETE FROM imgfeat.featurize_errors e
     WHERE e.source = record_errors_definer.source AND e.model_name = record_errors_definer.model_name
       AND e.id = ANY (record_errors_definer.ids)
       AND (e.target = record_errors_definer.target
            OR (e.target IS NULL AND pg_catalog.pg_has_role(who,
                    (SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = record_errors_definer.source), 'MEMBER')));
    -- one row per (source, target, model, id), enforced by featurize_errors_key even when
    -- jobs on the same ids run at once (Spark retries a task while the first try still writes)
    INSERT INTO imgfeat.featurize_errors AS e (source, target, id, model_name, error_class, message)
    SELECT DISTINCT ON (f.id) record_errors_definer.source, record_errors_definer.target, f.id, record_errors_definer.model_name,
           f.error_class, f.message
      FROM ROWS FROM (pg_catalog.unnest(ids), pg_catalog.unnest(error_classes), pg_catalog.unnest(messages))
           WITH ORDINALITY AS f(id, error_class, message, n)
     ORDER BY f.id, f.n DESC
    ON CONFLICT ON CONSTRAINT featurize_errors_key DO UPDATE
       SET error_class = excluded.error_class, message = excluded.message, failed_at = excluded.failed_at;
END
$$;
COMMENT ON FUNCTION imgfeat_internal.record_errors_definer(regclass, regclass, text, text[], text[], text[]) IS
'Internal, called by imgfeat_internal.record_errors. Records the failures of a featurize job (one row per source, target, model and id: the latest), replacing those ids'' earlier failures as imgfeat_internal.clear_errors_definer does, for a proven caller that may run the job (else SQLSTATE 42501).';

CREATE FUNCTION imgfeat_internal.clear_errors(source regclass, target regclass, model_name text, ids text[]) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO imgfeat_internal.caller_proofs DEFAULT VALUES;
    PERFORM imgfeat_internal.clear_errors_definer(source, target, model_name, ids);
END
$$;
COMMENT ON FUNCTION imgfeat_internal.clear_errors(regclass, regclass, text, text[]) IS
'Internal. Removes the recorded failures of ids a featurize job has now featurized, for a caller that may run the job (SECURITY INVOKER: proves the caller, then calls imgfeat_internal.clear_errors_definer; else SQLSTATE 42501).';

CREATE FUNCTION imgfeat_internal.clear_errors_definer(source regclass, target regclass, model_name text, ids text[]) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    who name := imgfeat_internal.caller();
BEGIN
    PERFORM imgfeat_internal.check_job_rights(who, source, target);
    -- failures recorded before imgfeat 0.3.0 have no target: any job on the source may have
    -- written them, so only the source's owner (who may run every such job) clears them
    DELETE FROM imgfeat.featurize_errors e
     WHERE e.source = clear_errors_definer.source AND e.model_name = clear_errors_definer.model_name
       AND e.id = ANY (clear_errors_definer.ids)
       AND (e.target = clear_errors_definer.target
            OR (e.target IS NULL AND pg_catalog.pg_has_role(who,
                    (SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = clear_errors_definer.source), 'MEMBER')));
END
$$;
COMMENT ON FUNCTION imgfeat_internal.clear_errors_definer(regclass, regclass, text, text[]) IS
'Internal, called by imgfeat_internal.clear_errors. Removes the recorded failures of the job (source, target, model_name) for ids, for a proven caller that may run the job (else SQLSTATE 42501). Failures recorded before imgfeat 0.3.0 (target NULL) are removed only for a member of the source''s owner.';

CREATE VIEW imgfeat.featurize_progress AS
SELECT j.job_id, j.source, j.target, j.model_name, s.status,
       j.rows_done, j.rows_failed, j.rows_total,
       CASE WHEN j.rows_total = 0 THEN 100.0
            ELSE round(100.0 * (j.rows_done + j.rows_failed) / j.rows_total, 1) END AS percent,
       round(j.images_per_second::numeric, 1) AS images_per_second,
       CASE WHEN s.status = 'running' AND j.images_per_second > 0
            THEN pg_catalog.make_interval(secs => (j.rows_total - j.rows_done - j.rows_failed) / j.images_per_second) END AS eta,
       j.timings, j.started_by, j.started_at, j.updated_at, j.finished_at, j.pid, j.error,
       CASE WHEN s.status = 'done' AND j.rows_total = 0 THEN 'nothing to do: every row already had features'
            WHEN s.status = 'done' AND j.rows_failed > 0
            THEN j.rows_failed || CASE WHEN j.rows_failed = 1 THEN ' row' ELSE ' rows' END
                 || ' could not be featurized: see imgfeat.featurize_errors'
            WHEN s.status = 'failed'
            THEN 'stopped by an error (the error column); the rows done before it are kept: CALL imgfeat.featurize again to go on'
            WHEN s.status = 'interrupted'
            THEN 'its session ended or moved on before the job did; the rows done before are kept: CALL imgfeat.featurize again to go on'
       END AS detail
FROM imgfeat.featurize_jobs j
CROSS JOIN LATERAL (
    -- running only while the job's backend is there and (where this role may see that session's
    -- activity) still busy with the statement that started the job: not idle, not on a later one
    SELECT CASE WHEN j.status = 'running' AND NOT EXISTS (
                    SELECT 1 FROM pg_catalog.pg_stat_activity a
                     WHERE a.pid = j.pid
                       AND (a.state IS NULL OR (a.state = 'active' AND a.query_start <= j.started_at)))
                THEN 'interrupted' ELSE j.status END AS status
) s;
COMMENT ON VIEW imgfeat.featurize_progress IS
'Progress of featurize jobs, readable from another session while a job runs: rows done/failed/total, percent, images per second, ETA. status: running | done | failed (stopped by an error, in error) | interrupted (its backend is gone, or has moved on without recording the end). A call that found nothing to do is done at 100 percent with rows_total 0. detail says what a person would want to know next.';

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
'Featurizes every row of source into target (created if missing: id <source id type>, model_name text, features real[], featurized_at; primary key (id, model_name); an existing target must belong to the caller). image_column is bytea (image bytes) or text (paths under imgfeat.image_root; reading files needs membership in imgfeat_file_reader or pg_read_server_files). Rows go through onnxruntime in batches of batch_size (1..512, cut short at 256 MiB of encoded images), each batch committed: interrupted jobs keep their work, and calling again does only the rows not yet done (one row per id and model). on_error: raise (stop with an ERROR naming the id) | skip (record in imgfeat.featurize_errors and go on). Progress: NOTICEs every 10 s and imgfeat.featurize_progress. Call it outside an explicit transaction block (it commits). Runs with the caller''s rights; identifiers are quoted.';
