#!/usr/bin/env bash
# Install the speech synthesizers and the sentence source used by embedseg's built-in speech
# corpus (`embedseg data speech`): espeak-ng with the MBROLA voices of real speakers, flite,
# festival with three diphone voices, and WordNet (its usage examples are the sentences).
#
# The mbrola-* packages live in Debian's contrib and non-free components; scripts/apt_install.sh
# reaches them without editing the system's apt sources.
#
# With --extended it also installs the 30 more MBROLA voices of `embedseg data speech --voices
# all` (about 420 MB more).
#
# Needs root and apt access. Idempotent: returns at once when everything is installed.
set -euo pipefail

MBROLA_VOICES="us1 us2 us3 en1 af1 de1 de2 de3 de4 de5 de6 fr1 fr4 gr2 hu1 nl2 pl1 ro1 sw1 sw2"
# Keep in step with _MBROLA_EXTENDED in domains/audio/corpus.py.
MBROLA_EXTENDED="br1 br2 br3 br4 ca1 ca2 cr1 cz2 de7 ee1 fr2 fr3 fr5 fr6 fr7 gr1 ic1 id1 ir1 it1 it2 it3 it4 la1 lt1 lt2 nl3 pt1 tr1 tr2"
case "${1:-}" in
  --extended) MBROLA_VOICES="$MBROLA_VOICES $MBROLA_EXTENDED" ;;
  "") ;;
  *) echo "usage: $0 [--extended]" >&2; exit 2 ;;
esac
MAIN_PACKAGES="espeak-ng flite festival festvox-kdlpc16k festvox-rablpc16k festvox-don wordnet-base"
NONFREE_PACKAGES="mbrola"
for v in $MBROLA_VOICES; do NONFREE_PACKAGES="$NONFREE_PACKAGES mbrola-$v"; done

# shellcheck disable=SC2086
exec bash "$(dirname "$0")/apt_install.sh" speech-voices $MAIN_PACKAGES $NONFREE_PACKAGES
