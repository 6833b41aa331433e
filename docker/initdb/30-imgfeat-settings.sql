-- imgfeat Docker image, first start: server settings from the container's environment.
-- IMGFEAT_IMAGE_ROOT (e.g. docker run -e IMGFEAT_IMAGE_ROOT=/images -v "$PWD/images:/images:ro")
-- becomes imgfeat.image_root, the directory imgfeat.featurize_image_file and CALL
-- imgfeat.featurize read image files under. It is written with ALTER SYSTEM because imgfeat
-- honours it only from the configuration files (postgresql.conf, postgresql.auto.conf),
-- not from `postgres -c` or SET. Later changes: ALTER SYSTEM SET ...; SELECT pg_reload_conf();
\getenv imgfeat_image_root IMGFEAT_IMAGE_ROOT
\if :{?imgfeat_image_root}
-- SET first: before PostgreSQL 17, ALTER SYSTEM accepts a placeholder setting only once the
-- session has defined it.
SET imgfeat.image_root = :'imgfeat_image_root';
ALTER SYSTEM SET imgfeat.image_root = :'imgfeat_image_root';
RESET imgfeat.image_root;
\endif
