#!/usr/bin/env bash
# Regenerates the spoken prompts in this folder: 8 kHz mono 16-bit WAV, the format the edge
# encodes once to PCMU and PCMA at start. Made with espeak-ng (apt-get install espeak-ng) and
# Python's audioop for the resampling; the output is committed, so builds do not need either.
set -euo pipefail
cd "$(dirname "$0")"
say() { # name, text
  espeak-ng -v en-us -s 150 -a 120 -w "/tmp/orbit-prompt-$1.wav" "$2"
  python3 -W ignore - "/tmp/orbit-prompt-$1.wav" "$1.wav" <<'PY'
import audioop, sys, wave
src = wave.open(sys.argv[1], "rb")
frames = src.readframes(src.getnframes())
if src.getnchannels() == 2:
    frames = audioop.tomono(frames, 2, 0.5, 0.5)
frames, _ = audioop.ratecv(frames, 2, 1, src.getframerate(), 8000, None)
# Trim espeak's leading and trailing silence, keeping 40 ms either side.
n = len(frames) // 2
loud = [i for i in range(0, n, 80) if audioop.rms(frames[2 * i:2 * i + 160], 2) > 200]
if loud:
    a, b = max(0, loud[0] - 320), min(n, loud[-1] + 80 + 320)
    frames = frames[2 * a:2 * b]
out = wave.open(sys.argv[2], "wb")
out.setnchannels(1); out.setsampwidth(2); out.setframerate(8000)
out.writeframes(frames)
PY
  rm -f "/tmp/orbit-prompt-$1.wav"
}
for d in 0 1 2 3 4 5 6 7 8 9; do
  words=(zero one two three four five six seven eight nine)
  say "digit-$d" "${words[$d]}"
done
say parked-on "Parked on"
say lot-full "Sorry, the parking lot is full."
say slot-taken "Sorry, that slot is taken."
say park-failed "Sorry, the call could not be parked."
