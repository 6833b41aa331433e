-- Internal objects live in the schema imgfeat_internal, apart from the public surface. Analysts
-- (imgfeat_user) may use the schema but execute only imgfeat_internal.bootstrap() and
-- imgfeat_internal.config_settings(): the functions that take a catalog row are reachable only
-- through the SECURITY DEFINER wrappers in 30_featurize_image.sql and 50_classifiers.sql.

CREATE SCHEMA imgfeat_internal;
COMMENT ON SCHEMA imgfeat_internal IS 'imgfeat''s internal objects: not part of its interface (see the README''s Security section).';

-- Placeholder settings are hidden from pg_settings and any user can SET them, so settings
-- that widen what the server may do are read from the configuration files only.
CREATE FUNCTION imgfeat_internal.config_settings() RETURNS TABLE (name text, setting text)
LANGUAGE sql STABLE PARALLEL RESTRICTED SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT DISTINCT ON (f.name) f.name, f.setting
    FROM pg_catalog.pg_file_settings f
    WHERE f.name LIKE 'imgfeat.%' AND f.error IS NULL
    ORDER BY f.name, f.seqno DESC;
END;
COMMENT ON FUNCTION imgfeat_internal.config_settings() IS
'Internal. The imgfeat.* settings as the server configuration files (postgresql.conf, postgresql.auto.conf from ALTER SYSTEM) set them: name, value. SECURITY DEFINER over pg_file_settings (superuser-only), restricted to imgfeat.*. Settings that widen what the server may do (imgfeat.image_root, the ceiling imgfeat.max_image_pixels) are honoured only from here.';

-- The PL/Python bootstrap: functions that never run in parallel mode call it once per backend.
-- The library's location is fixed when the extension is built (make install substitutes it);
-- only the extension's version, from the catalog, completes the path.
CREATE FUNCTION imgfeat_internal.bootstrap() RETURNS void
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
import os, re, sys
version = plpy.execute("SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'imgfeat'")[0]["extversion"]
if not re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+", version):
    plpy.error("imgfeat: unexpected extension version %r" % version, sqlstate="55000")
path = os.path.realpath("@IMGFEAT_LIB_DIR@/" + version)
if path not in sys.path:
    sys.path.insert(0, path)
try:
    import imgfeat.server as server
except ImportError as exc:
    plpy.error("imgfeat: cannot import the imgfeat library from @IMGFEAT_LIB_DIR@/%s: %s" % (version, exc),
               hint="Run `make install` on the database host (as root); see SELECT imgfeat.python_info() and the README's Troubleshooting.",
               sqlstate="58000")
if server.__version__ != version:
    plpy.error("imgfeat: library version %s at %s does not match the extension version %s" % (server.__version__, server.__file__, version),
               hint="Install the matching library with `make install`, or ALTER EXTENSION imgfeat UPDATE.",
               sqlstate="55000")
GD["imgfeat"] = server
$$;
COMMENT ON FUNCTION imgfeat_internal.bootstrap() IS
'Internal. Puts @IMGFEAT_LIB_DIR@/<extension version> (fixed when the extension was installed; resolved once, so a reinstall never shows a backend half a library) on sys.path, checks that the library''s version equals the extension''s, and stores the imgfeat.server module in GD. No setting, argument or table chooses the directory.';

CREATE FUNCTION imgfeat.python_info() RETURNS jsonb
LANGUAGE plpython3u VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
if "imgfeat" not in GD:
    plpy.execute("SELECT imgfeat_internal.bootstrap()")
return GD["imgfeat"].python_info(plpy)
$$;
COMMENT ON FUNCTION imgfeat.python_info() IS
'The server-side Python as imgfeat sees it: imgfeat (library version), library_path (the installed directory, fixed at install), python_version, python_executable, sys_path, package versions (numpy, onnxruntime, PIL, sklearn, onnx; "MISSING: ..." when absent), onnxruntime providers and cpu_count, the session''s settings (threads, max image pixels, cache size) and its model cache (loaded models, load counts per model, evictions). The first thing to run when something is wrong.';
