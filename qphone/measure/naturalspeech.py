"""Recorded human speech for the quality measurements, from a Debian package (not shipped).

The bundled samples (samples/) are synthetic speech, which under-rates a codec and over-rates
concealment.  Debian's ``asterisk-core-sounds-en-wav`` package holds Allison Smith's recorded
English prompts for Asterisk (CC-BY-SA 3.0, Digium; 8 kHz, 16-bit, mono); ``make setup``
installs it.  :func:`natural_speech_sample` joins three of them into one sample of about 8 s,
like the synthetic ones (a lead-in, short pauses, a tail), at the recording's own 8 kHz: PESQ on
it is narrow-band (ITU-T P.862, not P.862.2).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qphone.audio.wav import read_wav, write_wav

PACKAGE = "asterisk-core-sounds-en-wav"
SOUNDS = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
PROMPTS = ("conf-onlyperson.wav", "call-fwd-no-ans.wav", "all-circuits-busy-now.wav")
RATE = 8000
LEAD_S, GAP_S, TAIL_S = 0.2, 0.3, 0.5
NAME = "natural_en_8k.wav"


class NaturalSpeechUnavailable(FileNotFoundError):
    """The recorded prompts are not installed."""


def prompts_installed(sounds: Path = SOUNDS) -> bool:
    return all((sounds / name).is_file() for name in PROMPTS)


def natural_speech_sample(directory: Path, sounds: Path = SOUNDS) -> Path:
    """Write the natural-speech sample (8 kHz mono) into ``directory``; return its path."""
    if not prompts_installed(sounds):
        raise NaturalSpeechUnavailable(
            f"recorded speech not found in {sounds}: install Debian's {PACKAGE} "
            f"(`make setup` does, or apt-get install {PACKAGE})"
        )
    parts = [np.zeros(int(LEAD_S * RATE), dtype=np.int16)]
    for name in PROMPTS:
        pcm, _ = read_wav(sounds / name, RATE)
        parts += [np.asarray(pcm, dtype=np.int16), np.zeros(int(GAP_S * RATE), dtype=np.int16)]
    parts[-1] = np.zeros(int(TAIL_S * RATE), dtype=np.int16)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / NAME
    write_wav(path, np.concatenate(parts), RATE)
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m qphone.measure.naturalspeech DIR``: write the sample into DIR, print its
    path (for ``qphone loopback PATH``)."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m qphone.measure.naturalspeech DIR", file=sys.stderr)
        return 2
    try:
        print(natural_speech_sample(Path(args[0])))
    except NaturalSpeechUnavailable as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
