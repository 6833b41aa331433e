# imgfeat: a PGXS extension (SQL + PL/Python) plus its server-side Python library.
#   make install        as root on the database host: extension files + library + pinned deps
#   make installcheck   pg_regress tests against a running server (PGHOST/PGPORT/PGUSER)
#   make test           everything: sets up what it needs, then runs the pytest suite
#   make demo           the main job (CMU faces: featurize, train, evaluate)
#   make bench          benchmarks that print figures

EXTENSION = imgfeat
EXTVERSION := $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" $(EXTENSION).control)

IMGFEAT_LIB_DIR ?= /usr/local/lib/imgfeat
PLPYTHON ?= /usr/bin/python3
PYTHON ?= python3

# The current version's install script is assembled from sql/src/*.sql; earlier releases'
# install scripts (frozen) and the upgrade scripts between versions live in sql/releases/.
RELEASE_SOURCES = $(wildcard sql/releases/$(EXTENSION)--*.sql.in)
DATA_built = sql/$(EXTENSION)--$(EXTVERSION).sql $(patsubst sql/releases/%.sql.in,sql/%.sql,$(RELEASE_SOURCES))
REGRESS = $(patsubst tests/sql/%.sql,%,$(sort $(wildcard tests/sql/*.sql)))
REGRESS_OPTS = --inputdir=tests --outputdir=build/regress
EXTRA_CLEAN = build

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

SQL_SOURCES = $(sort $(wildcard sql/src/*.sql))

PRELUDE = sql/src/parallel_prelude.py.in
# $(call assemble,FILES): the PL/Python parallel prelude inlined, install paths and version substituted.
assemble = sed -e '/^@PARALLEL_PRELUDE@$$/{r $(PRELUDE)' -e 'd;}' $(1) \
	| sed -e 's|@IMGFEAT_LIB_DIR@|$(IMGFEAT_LIB_DIR)|g' -e 's|@EXTVERSION@|$(EXTVERSION)|g'

# The library directory is written into the scripts: rebuild them when it changes.
LIBDIR_STAMP = build/libdir-$(subst /,_,$(IMGFEAT_LIB_DIR)).stamp
$(LIBDIR_STAMP):
	@mkdir -p build && rm -f build/libdir-*.stamp && touch $@

sql/$(EXTENSION)--$(EXTVERSION).sql: $(SQL_SOURCES) $(PRELUDE) $(EXTENSION).control Makefile $(LIBDIR_STAMP)
	$(call assemble,$(SQL_SOURCES)) > $@

# Frozen releases have the prelude and their version inlined; only the library directory is substituted.
# The stamp is also an explicit prerequisite: as only a pattern rule's, make 4.3 did not rebuild
# existing scripts (with another library directory written in them) after creating the stamp.
$(patsubst sql/releases/%.sql.in,sql/%.sql,$(RELEASE_SOURCES)): $(LIBDIR_STAMP)
sql/%.sql: sql/releases/%.sql.in $(PRELUDE) $(EXTENSION).control Makefile $(LIBDIR_STAMP)
	$(call assemble,$<) > $@

# pg_regress writes its results into REGRESS_OPTS' --outputdir, which must exist (a fresh
# checkout has no build/): world-writable, as the server's user may write there too.
installcheck: | build/regress
build/regress:
	mkdir -p $@ && chmod 0777 $@

LIBDEST = $(DESTDIR)$(IMGFEAT_LIB_DIR)/$(EXTVERSION)
LOCK = plpython/requirements.lock

install: install-lib

# The library and its pinned dependencies, for the Python that PL/Python embeds, in a tree of
# this version's own, swapped in atomically (scripts/install-lib.sh): a server under load never
# imports a half-installed library. pip runs again only when the lock file changes.
install-lib:
	@bash scripts/install-lib.sh $(DESTDIR)$(IMGFEAT_LIB_DIR) $(EXTVERSION) $(LOCK) $(PLPYTHON) plpython/imgfeat

uninstall: uninstall-lib
uninstall-lib:
	rm -rf $(LIBDEST) $(DESTDIR)$(IMGFEAT_LIB_DIR)/.$(EXTVERSION)-*

.PHONY: install-lib uninstall-lib test demo demo-stop bench dev

dev:
	bash scripts/setup-dev.sh

test: dev
	bash scripts/run-tests.sh

demo:
	bash scripts/demo.sh $(DEMO_ARGS)

demo-stop:
	.venv/bin/python -c 'from pathlib import Path; from imgfeat_loader.cluster import LocalCluster; LocalCluster(base_dir=Path(".imgfeat/cluster").resolve(), keep=True).stop()'

bench: dev
	.venv/bin/python -m bench
