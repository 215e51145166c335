"""Defaults and limits, in one place. Every timeout has a name; CLIs may override them."""
from __future__ import annotations

# Networking
DEFAULT_TRACKER_PORT = 9000
CONNECT_TIMEOUT = 5.0           # one TCP connect attempt
CONNECT_DEADLINE = 10.0         # give up reaching a peer after this long
IO_TIMEOUT = 30.0               # one recv/send on a control connection
TRANSFER_STALL_TIMEOUT = 60.0   # one recv/send on the file port (a stall, not the whole file)
CONNECT_BACKOFF_FIRST, CONNECT_BACKOFF_CAP = 0.1, 2.0   # between connect attempts
RECONNECT_BACKOFF_FIRST, RECONNECT_BACKOFF_CAP = 1.0, 30.0   # a worker re-registering with the tracker
REPORT_BACKOFF_FIRST, REPORT_BACKOFF_CAP = 0.5, 10.0   # resending an audit event
HANDSHAKE_TIMEOUT = 10.0        # a new connection must say hello and log in within this

# Liveness
HEARTBEAT_INTERVAL = 5.0        # worker -> tracker
REREGISTER_SPREAD = 10.0        # a worker that lost the tracker waits up to this long (at random) to
                                # register again: a farm's logins after a restart spread over it
PEER_TTL = 3 * HEARTBEAT_INTERVAL   # tracker drops a worker silent for this long
PROGRESS_INTERVAL = 2.0         # worker -> boss while encoding; doubles as a liveness signal
WORKER_SILENCE_TIMEOUT = 30.0   # boss gives up on a worker silent for this long
WAIT_RETRY = 0.5                # worker asks again this soon after a `wait` reply

# Tickets and sessions
TICKET_TTL = 600.0              # a ticket opens a session within this many seconds
TICKET_CLOCK_SKEW = 60.0        # tolerated clock difference between tracker and worker

# Limits on what a peer may announce
MAX_FRAME = 256 * 1024          # one control message
MAX_CHUNK_BYTES = 8 * 1024**3   # one chunk on the file port
MAX_SAMPLE_BYTES = 256 * 1024**2   # the start of a result a worker sends while encoding (see PROTOCOL.md)
SAMPLE_MAX_FRAMES = 48          # ... and at most this many frames uncompressed: 24 frames and the rest
                                # of their 250 ms clusters weigh less at any frame rate a chunk has
MAX_WORKERS_PER_REQUEST = 256
MAX_SLOTS = 64
DEFAULT_PREFETCH = 1            # chunks a worker holds, uploaded, beside those it encodes
MAX_CHUNK_INDEX = 10_000_000     # chunk numbers on the wire
MAX_FRAMES = 10**9              # frame counts and ranges on the wire
MAX_REASON = 300                # characters of a peer's or ffmpeg's reason sent, logged or audited

# ffmpeg
FFMPEG_CHUNK_TIMEOUT = 60 * 60  # one chunk's encode
FFMPEG_TOOL_TIMEOUT = 6 * 60 * 60   # split / audio / concat / verify of a whole input
# One check of a result (client/checks.py check_timeout): this much, plus this much per frame (a
# decode at 10 fps still finishes). A result made to stall the boss is killed at the deadline.
CHECK_FIXED_SECONDS = 20.0
CHECK_SECONDS_PER_FRAME = 0.1
FFMPEG_PROBE_TIMEOUT = 120.0       # one ffprobe of a file's streams
FFMPEG_QUERY_TIMEOUT = 30.0        # ffmpeg -version / -encoders
ENCODER_TEST_TIMEOUT = 20.0        # a one-frame test encode at a worker's start (a GPU may take seconds to open)
DEFAULT_VERIFY_FRACTION = 0.1   # results the boss decodes in full, besides each ffmpeg build's first
MAX_ATTEMPTS = 3                # a chunk failing this often fails the job

# SCRAM
SCRAM_MECHANISM = "SCRAM-SHA-256"
SCRAM_ITERATIONS = 200_000
