"""WebRTC transport of a call: signaling, RTP payload path, control and heartbeat channels."""
