#!/usr/bin/env bash
# Install the recordings of real people used by embedseg's second built-in speech corpus
# (`embedseg data speech-real`): Asterisk's voice prompts (English, Spanish, French, Italian,
# Russian), Fish Fillets NG's dialogues spoken by Czech and Dutch actors, and KLettres' letters
# and syllables read by native speakers of some twenty languages.
#
# All of them are in Debian's main component. As in install_speech_voices.sh, apt is pointed at
# a private sources list derived from the system's Debian entry (plus private lists and cache
# directories) through -o options, so a fresh package index is fetched without touching the
# system's configuration or its lists; the same private state serves both scripts.
#
# Needs root and apt access. Idempotent: returns at once when everything is installed.
set -euo pipefail

PACKAGES="asterisk-core-sounds-en-wav asterisk-core-sounds-es-wav asterisk-core-sounds-fr-wav
asterisk-core-sounds-it-wav asterisk-core-sounds-ru-wav asterisk-prompt-it-menardi-wav
asterisk-prompt-es-co asterisk-prompt-fr-armelle fillets-ng-data-cs fillets-ng-data-nl klettres-data"

missing=""
for p in $PACKAGES; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $p"
  fi
done
if [ -z "$missing" ]; then
  echo "[speech-real] all packages already installed"
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  echo "[speech-real] missing packages:$missing" >&2
  echo "[speech-real] run this script as root (it installs them with apt-get)" >&2
  exit 1
fi
echo "[speech-real] installing:$missing"

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
# The same components as install_speech_voices.sh writes, so the shared lists stay valid for both.
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
# Without recommends: the recordings are wanted, not Asterisk, the game or KDE.
# shellcheck disable=SC2086
apt-get "${apt_opts[@]}" -y -qq --no-install-recommends install $missing
apt-get "${apt_opts[@]}" -qq clean
echo "[speech-real] done"
