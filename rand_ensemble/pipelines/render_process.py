"""A pybullet Renderer in a child process, so a render that never returns can be timed out.

pybullet's TinyRenderer can spin forever inside getCameraImage on some scenes (seen here on
object 168, view 2, seed 0 at hw=32); a C call cannot be interrupted in-thread, so the render
DoFn talks to one child process per worker and replaces it when a render overruns.
"""
import math
import multiprocessing
import signal

from rand_ensemble.errors import RandEnsembleError


class RenderTimeout(RandEnsembleError):
    """A render took longer than the time limit; its process was killed."""


class RenderError(RandEnsembleError):
    """A render raised in the child; `description` is the child's 'Type: message'."""

    def __init__(self, type_name, message):
        super().__init__(message)
        self.description = f"{type_name}: {message}"


def _serve(conn, hw, colour):
    """Child loop: (object_id, view, seed) -> ("ok", image, camera) or ("error", type, message)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)        # Ctrl-C is the parent's to handle
    from rand_ensemble.data.render import Renderer  # pybullet, in the child process only
    with Renderer(hw, colour) as renderer:
        conn.send(("ready",))
        while True:
            request = conn.recv()
            if request is None:
                return
            try:
                conn.send(("ok",) + tuple(renderer.render_view(*request)))
            except Exception as e:
                conn.send(("error", type(e).__name__, str(e)))


class RenderProcess:
    """render_view(object_id, view, seed) in a child process, with a per-render time limit."""

    def __init__(self, hw, colour, timeout_s=30.0):
        self.hw, self.colour, self.timeout_s = hw, colour, float(timeout_s)
        self.process = self.conn = None

    def start(self):
        ctx = multiprocessing.get_context("spawn")      # no fork of a multi-threaded worker
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child, self.hw, self.colour), daemon=True)
        self.process.start()
        child.close()
        if not self.conn.poll(120.0):
            self.close()
            raise RandEnsembleError("render process did not start within 120 s")
        self.conn.recv()

    def render_view(self, object_id, view, seed):
        """-> (uint8 (hw, hw, 3), camera dict); raises RandEnsembleError on failure or timeout."""
        if self.process is None:
            self.start()
        try:
            self.conn.send((object_id, view, seed))
            ready = self.conn.poll(None if math.isinf(self.timeout_s) else self.timeout_s)
            reply = self.conn.recv() if ready else None
        except (EOFError, OSError) as e:
            self.close()
            raise RandEnsembleError(f"render process died: {e or type(e).__name__}") from None
        if reply is None:
            self.close()
            raise RenderTimeout(f"render did not finish within {self.timeout_s:g} s")
        if reply[0] == "error":
            raise RenderError(reply[1], reply[2])
        return reply[1], reply[2]

    def close(self):
        """Stop the child (politely, then by force); safe to call twice."""
        if self.process is None:
            return
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.process.join(2.0)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5.0)
        self.conn.close()
        self.process = self.conn = None
