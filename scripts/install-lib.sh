#!/usr/bin/env bash
# make install-lib: the server-side library and its pinned dependencies, for the Python that
# PL/Python embeds, installed so that a running server never sees half of it.
#
#   install-lib.sh DEST VERSION LOCK PLPYTHON SRC
#
# DEST/VERSION is a symlink to a complete tree DEST/.VERSION-<stamp> (imgfeat/ and the packages
# of LOCK). Each install builds a new tree beside the current one, then renames a new symlink
# over DEST/VERSION (rename is atomic): a backend that starts meanwhile resolves the link once
# and sees the old tree or the new one, never a mix. Unchanged dependencies are hard links to the
# current tree's files (no download); the previous tree is kept for backends that started on it,
# older ones are removed.
set -euo pipefail
dest=$1 version=$2 lock=$3 python=$4 src=$5

mkdir -p "$dest"
link="$dest/$version"
name=".$version-$(date -u +%Y%m%dT%H%M%S)-$$"
new="$dest/$name"
current=""
if [ -L "$link" ]; then
  current=$(readlink -f "$link")
elif [ -d "$link" ]; then
  # A tree from before installs were atomic: move it aside once (the only non-atomic step).
  current="$dest/.$version-legacy"
  rm -rf "$current"
  mv "$link" "$current"
  ln -s ".$version-legacy" "$link"
fi

trap 'rm -rf "$new"' ERR
mkdir "$new"
if [ -n "$current" ] && [ -f "$current/.requirements.lock" ] && cmp -s "$lock" "$current/.requirements.lock"; then
  cp -al "$current/." "$new/"
  rm -rf "$new/imgfeat"
else
  echo "installing server-side packages for $python into $new"
  "$python" -m pip install --quiet --disable-pip-version-check --no-warn-script-location --root-user-action=ignore \
      --target "$new" -r "$lock"
  cp "$lock" "$new/.requirements.lock"
fi
cp -R "$src" "$new/imgfeat"
find "$new/imgfeat" -name __pycache__ -prune -exec rm -rf {} +
"$python" -m compileall -q "$new/imgfeat"
chmod -R a+rX "$new"
chmod a+rx "$dest"

ln -s "$name" "$dest/.$version.link.$$"
mv -T "$dest/.$version.link.$$" "$link"
trap - ERR

# Keep the new tree and the one it replaced; remove older trees of this version.
keep_old=$(basename "${current:-none}")
for tree in "$dest"/.$version-*; do
  [ -d "$tree" ] || continue
  case "$(basename "$tree")" in "$name"|"$keep_old") ;; *) rm -rf "$tree" ;; esac
done
