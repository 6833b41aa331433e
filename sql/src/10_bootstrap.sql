-- The PL/Python bootstrap: every function's prelude calls this once per backend.

CREATE FUNCTION imgfeat._bootstrap() RETURNS void
LANGUAGE plpython3u VOLATILE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
import sys
libdir = "@IMGFEAT_LIB_DIR@"
rows = plpy.execute("SELECT setting, source FROM pg_catalog.pg_settings WHERE name = 'imgfeat.python_lib_dir'")
if rows and rows[0]["setting"]:
    if rows[0]["source"] not in ("configuration file", "command line", "default"):
        plpy.error(
            "imgfeat.python_lib_dir is set by source '%s'; imgfeat honours it only from the server configuration" % rows[0]["source"],
            hint="A superuser sets it with ALTER SYSTEM SET imgfeat.python_lib_dir = '...'; SELECT pg_reload_conf();",
            sqlstate="55000")
    libdir = rows[0]["setting"]
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
LANGUAGE plpython3u VOLATILE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
if "imgfeat" not in GD:
    plpy.execute("SELECT imgfeat._bootstrap()")
return GD["imgfeat"].python_info(plpy)
$$;
COMMENT ON FUNCTION imgfeat.python_info() IS
'The server-side Python as imgfeat sees it: python_version, python_executable, sys_path, package versions (numpy, onnxruntime, PIL, sklearn, onnx; "MISSING: ..." when absent), onnxruntime providers and cpu_count, the session''s settings (threads, max image pixels, cache size) and its model cache (loaded models, load counts per model, evictions). The first thing to run when something is wrong.';
