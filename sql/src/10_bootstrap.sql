-- The PL/Python bootstrap: every function's prelude calls this once per backend.

-- Placeholder settings are hidden from pg_settings and any user can SET them, so settings
-- that widen what the server may do are read from the configuration files only.
CREATE FUNCTION imgfeat._config_settings() RETURNS TABLE (name text, setting text)
LANGUAGE sql STABLE PARALLEL RESTRICTED SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT DISTINCT ON (f.name) f.name, f.setting
    FROM pg_catalog.pg_file_settings f
    WHERE f.name LIKE 'imgfeat.%' AND f.error IS NULL
    ORDER BY f.name, f.seqno DESC;
END;
COMMENT ON FUNCTION imgfeat._config_settings() IS
'Internal. The imgfeat.* settings as the server configuration files (postgresql.conf, postgresql.auto.conf from ALTER SYSTEM) set them: name, value. SECURITY DEFINER over pg_file_settings (superuser-only), restricted to imgfeat.*. Settings that widen what the server may do (imgfeat.python_lib_dir, imgfeat.image_root) are honoured only from here.';

CREATE FUNCTION imgfeat._bootstrap() RETURNS void
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
import sys
libdir = "@IMGFEAT_LIB_DIR@"
configured = plpy.execute("SELECT setting FROM imgfeat._config_settings() WHERE name = 'imgfeat.python_lib_dir'")
current = plpy.execute("SELECT pg_catalog.current_setting('imgfeat.python_lib_dir', true) AS v")[0]["v"] or None
if configured:
    libdir = configured[0]["setting"]
if current is not None and current != (configured[0]["setting"] if configured else None):
    plpy.error(
        "imgfeat.python_lib_dir is set to '%s' outside the server configuration; imgfeat honours it only from postgresql.conf or ALTER SYSTEM" % current,
        detail="Any user can SET a placeholder setting; the server must not import code from a session's directory.",
        hint="RESET imgfeat.python_lib_dir; a superuser sets it with ALTER SYSTEM SET imgfeat.python_lib_dir = '...'; SELECT pg_reload_conf();",
        sqlstate="55000")
version = plpy.execute("SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'imgfeat'")[0]["extversion"]
path = libdir.rstrip("/") + "/" + version
if path not in sys.path:
    sys.path.insert(0, path)
try:
    import imgfeat.server as server
except ImportError as exc:
    plpy.error("imgfeat: cannot import the imgfeat library from %s: %s" % (path, exc),
               hint="Run `make install` on the database host, or set imgfeat.python_lib_dir; see SELECT imgfeat.python_info() and the README's Troubleshooting.",
               sqlstate="58000")
if server.__version__ != version:
    plpy.error("imgfeat: library version %s at %s does not match the extension version %s" % (server.__version__, server.__file__, version),
               hint="Install the matching library with `make install`, or ALTER EXTENSION imgfeat UPDATE.",
               sqlstate="55000")
GD["imgfeat"] = server
$$;
COMMENT ON FUNCTION imgfeat._bootstrap() IS
'Internal. Puts <imgfeat.python_lib_dir>/<extension version> (default @IMGFEAT_LIB_DIR@/<version>) on sys.path, checks the library version equals the extension version, and stores the imgfeat.server module in GD. imgfeat.python_lib_dir is honoured only from the server configuration.';

CREATE FUNCTION imgfeat.python_info() RETURNS jsonb
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
if "imgfeat" not in GD:
    plpy.execute("SELECT imgfeat._bootstrap()")
return GD["imgfeat"].python_info(plpy)
$$;
COMMENT ON FUNCTION imgfeat.python_info() IS
'The server-side Python as imgfeat sees it: python_version, python_executable, sys_path, package versions (numpy, onnxruntime, PIL, sklearn, onnx; "MISSING: ..." when absent), onnxruntime providers and cpu_count, the session''s settings (threads, max image pixels, cache size) and its model cache (loaded models, load counts per model, evictions). The first thing to run when something is wrong.';
