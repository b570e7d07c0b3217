#!/usr/bin/env bash
# Regenerates the synthetic speech samples in this folder (see README.md).
# Needs the Debian packages espeak-ng and sox. Output is deterministic for a given
# espeak-ng/sox version; the committed files were made with espeak-ng 1.51 and sox 14.4.2.
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

TEXT_A="The quiet boat drifted past the old stone bridge. A warm cup of tea helps on a cold morning. She folded the blue map."
TEXT_B="The farmer carried two heavy baskets of apples. Thick clouds rolled over the hills. Our train leaves at a quarter past nine."

make_voice() {  # name voice words-per-minute text
  local name=$1 voice=$2 wpm=$3 text=$4
  espeak-ng -v "$voice" -s "$wpm" -g 2 -w "$tmp/$name.raw.wav" "$text"
  # strip espeak's leading/trailing silence, then 0.2 s lead-in and exactly 8.0 s in total
  sox "$tmp/$name.raw.wav" "$tmp/$name.trim.wav" \
    silence 1 0.02 0.3% reverse silence 1 0.02 0.3% reverse
  for rate in 16000 48000; do
    sox -V1 -D "$tmp/$name.trim.wav" -b 16 -c 1 "speech_${name}_$((rate / 1000))k.wav" \
      rate -v "$rate" norm -3 pad 0.2 0.5 trim 0 8.0
  done
}

make_voice a en-us+f3 182 "$TEXT_A"
make_voice b en-gb+m3 178 "$TEXT_B"
