"""Audio in and out of a call: Opus, sound devices, WAV files, sources and sinks."""
