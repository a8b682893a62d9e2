#!/usr/bin/env bash
# Builds Kickoff's packages into dist/ (release) or target/package/debug/dist/
# (debug: what `make test` unpacks and runs, never mistaken for a release):
#   kickoff_<version>_amd64.deb                    the desktop app (Tauri's bundler): desktop
#                                                  entry, icon, the kickoff-sender CLI in /usr/bin,
#                                                  its shell completions and man pages, and the
#                                                  shipped runbooks in /usr/share/kickoff
#   kickoff-sender-<version>-linux-<arch>.tar.gz   the CLI alone (servers, ECS images)
#
# Usage: deploy/package.sh [release|debug]   (make package: release; make test: debug,
# the debug build, rebuilt by Tauri in its production mode: the UI embedded)
#
# AppImage is not built: Tauri's AppImage bundler downloads its tools
# (linuxdeploy, the AppImage runtime) at build time, which this project's
# build machines cannot reach. The .deb and the tarball need no download.
set -euo pipefail
profile=${1:-release}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
case "$profile" in
  release) cargo_flags=(--release); tauri_flags=() ;;
  debug) cargo_flags=(); tauri_flags=(--debug) ;;
  *) echo "usage: $0 [release|debug]" >&2; exit 2 ;;
esac
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
[ -n "$version" ] || { echo "no version in Cargo.toml" >&2; exit 1; }
arch=$(uname -m)
deb_arch=$(dpkg --print-architecture)
bin="${CARGO_TARGET_DIR:-target}/$profile"
stage="target/package/$profile"
out=dist
[ "$profile" = debug ] && out="$stage/dist"
rm -rf "$stage" && mkdir -p "$stage/completions" "$stage/man" "$out"

echo "==> kickoff-sender ($profile)"
# Built with the app, as `make build` does: `-p kickoff-sender` alone
# resolves the shared crates' features without Tauri's and builds a second
# copy of every dependency (gigabytes of target/).
cargo build "${cargo_flags[@]}" -p kickoff -p kickoff-sender
"$bin/kickoff-sender" completions bash > "$stage/completions/kickoff-sender"
"$bin/kickoff-sender" completions zsh > "$stage/completions/_kickoff-sender"
"$bin/kickoff-sender" completions fish > "$stage/completions/kickoff-sender.fish"
"$bin/kickoff-sender" man --out "$stage/man" >/dev/null
gzip -9n "$stage"/man/*.1

echo "==> the desktop app and its .deb (Tauri's bundler)"
# What the .deb carries besides the app: paths in the package -> files here
# (relative to src-tauri/).
files="{\"/usr/bin/kickoff-sender\": \"../$bin/kickoff-sender\",
  \"/usr/share/bash-completion/completions/kickoff-sender\": \"../$stage/completions/kickoff-sender\",
  \"/usr/share/zsh/vendor-completions/_kickoff-sender\": \"../$stage/completions/_kickoff-sender\",
  \"/usr/share/fish/vendor_completions.d/kickoff-sender.fish\": \"../$stage/completions/kickoff-sender.fish\",
  \"/usr/share/man/man1\": \"../$stage/man\",
  \"/usr/share/kickoff/runbooks\": \"../runbooks\",
  \"/usr/share/doc/kickoff/README.md\": \"../README.md\"}"
cat > "$stage/tauri.package.json" <<JSON
{ "bundle": { "active": true, "targets": ["deb"], "linux": { "deb": { "files": $files } } } }
JSON
ui/node_modules/.bin/tauri build "${tauri_flags[@]}" --bundles deb --config "$stage/tauri.package.json" --ci
cp "$bin/bundle/deb/Kickoff_${version}_${deb_arch}.deb" "$out/kickoff_${version}_${deb_arch}.deb"

echo "==> the CLI tarball"
tar_dir="$stage/kickoff-sender-$version"
mkdir -p "$tar_dir"
cp "$bin/kickoff-sender" README.md "$tar_dir/"
cp -r "$stage/completions" "$stage/man" runbooks "$tar_dir/"
tar -C "$stage" -czf "$out/kickoff-sender-$version-linux-$arch.tar.gz" "kickoff-sender-$version"

ls -l "$out"/
