#!/usr/bin/env bash
# Install the recordings of real people used by embedseg's second built-in speech corpus
# (`embedseg data speech-real`): Asterisk's voice prompts (English, Spanish, French, Italian,
# Russian), Fish Fillets NG's dialogues spoken by Czech and Dutch actors, KLettres' letters
# and syllables and KTuberling's words, each read by native speakers of some twenty languages.
#
# All of them are in Debian's main component; scripts/apt_install.sh installs them as it does the
# synthesizers, without touching the system's apt configuration.
#
# With --tuxpaint it also installs Tux Paint's stamps (tuxpaint-stamps-default, about 160 MB),
# whose spoken stamp names are the opt-in source of `embedseg data speech-real --extra-sources
# tuxpaint`.
#
# Needs root and apt access. Idempotent: returns at once when everything is installed.
set -euo pipefail

PACKAGES="asterisk-core-sounds-en-wav asterisk-core-sounds-es-wav asterisk-core-sounds-fr-wav
asterisk-core-sounds-it-wav asterisk-core-sounds-ru-wav asterisk-prompt-it-menardi-wav
asterisk-prompt-es-co asterisk-prompt-fr-armelle fillets-ng-data-cs fillets-ng-data-nl klettres-data
ktuberling-data"
case "${1:-}" in
  --tuxpaint) PACKAGES="$PACKAGES tuxpaint-stamps-default" ;;
  "") ;;
  *) echo "usage: $0 [--tuxpaint]" >&2; exit 2 ;;
esac

# Without recommends: the recordings are wanted, not Asterisk, the game or KDE.
# shellcheck disable=SC2086
exec bash "$(dirname "$0")/apt_install.sh" speech-real $PACKAGES
