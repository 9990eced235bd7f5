#!/usr/bin/env bash
# Install the speech synthesizers and the sentence source used by embedseg's built-in speech
# corpus (`embedseg data speech`): espeak-ng with the MBROLA voices of real speakers, flite,
# festival with three diphone voices, and WordNet (its usage examples are the sentences).
#
# The mbrola-* packages live in Debian's contrib and non-free components. Rather than editing
# the system's apt sources, this script derives a private sources list from the system's own
# Debian entry, with those components added, and points apt at it (plus private lists and cache
# directories) through -o options. The system's configuration is left untouched.
#
# Needs root and apt access. Idempotent: returns at once when everything is installed.
set -euo pipefail

MBROLA_VOICES="us1 us2 us3 en1 af1 de1 de2 de3 de4 de5 de6 fr1 fr4 gr2 hu1 nl2 pl1 ro1 sw1 sw2"
MAIN_PACKAGES="espeak-ng flite festival festvox-kdlpc16k festvox-rablpc16k festvox-don wordnet-base"
NONFREE_PACKAGES="mbrola"
for v in $MBROLA_VOICES; do NONFREE_PACKAGES="$NONFREE_PACKAGES mbrola-$v"; done

missing=""
for p in $MAIN_PACKAGES $NONFREE_PACKAGES; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $p"
  fi
done
if [ -z "$missing" ]; then
  echo "[speech-voices] all packages already installed"
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  echo "[speech-voices] missing packages:$missing" >&2
  echo "[speech-voices] run this script as root (it installs them with apt-get)" >&2
  exit 1
fi
echo "[speech-voices] installing:$missing"

state_dir=${EMBEDSEG_APT_DIR:-/var/cache/embedseg-apt}
mkdir -p "$state_dir/lists/partial" "$state_dir/archives/partial"
sources="$state_dir/sources.list"

# The system's Debian mirror and release, from either the deb822 or the one-line format.
mirror=""
suite=""
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
  mirror=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  suite=$(awk '/^Suites:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
fi
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
  mirror=$(awk '$1 == "deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list)
  suite=$(awk '$1 == "deb" && $2 !~ /security/ {print $3; exit}' /etc/apt/sources.list)
fi
mirror=${mirror:-http://deb.debian.org/debian}
if [ -z "$suite" ]; then
  suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
fi
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
signed=""
[ -f "$keyring" ] && signed="[signed-by=$keyring] "
echo "deb ${signed}${mirror} ${suite} main contrib non-free" > "$sources"

apt_opts=(
  -o "Dir::Etc::SourceList=$sources"
  -o "Dir::Etc::SourceParts=/nonexistent"
  -o "Dir::State::Lists=$state_dir/lists"
  -o "Dir::Cache::Archives=$state_dir/archives"
  -o "Dir::Cache::pkgcache="
  -o "Dir::Cache::srcpkgcache="
)
export DEBIAN_FRONTEND=noninteractive
apt-get "${apt_opts[@]}" -qq update
# shellcheck disable=SC2086
apt-get "${apt_opts[@]}" -y -qq --no-install-recommends install $missing
apt-get "${apt_opts[@]}" -qq clean
echo "[speech-voices] done"
