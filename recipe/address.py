"""Where a page listens (`recipe serve`): a free port on the address asked for, found with the standard library only, so
that a port in use or an address of another machine is named before torch, fastai and gradio load."""
import errno, socket, sys

from .errors import RecipeError

__all__ = ['free_port']


def free_port(host, port=None) -> int:
    "`port` if it can be listened on at `host`, else the first free port from 7860: one clear error if there is none"
    if port is not None and not 0 < port < 65536: raise RecipeError(f"port must be from 1 to 65535, got {port}")
    for p in [port] if port else range(7860, 7960):
        try:
            with socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET) as s:
                if sys.platform == 'linux':  # as the server's own socket: a port in TIME_WAIT after the last serve is free
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # (elsewhere it can take a port in use)
                s.bind((host, p))
            return p
        except OSError as e:
            if e.errno == errno.EADDRINUSE: continue
            raise RecipeError(f"cannot listen on {host}: {e.strerror} (--host: an address of this machine, or 0.0.0.0 for all)") from None
        except UnicodeError: raise RecipeError(f"cannot listen on {host}: not a host name or address") from None  # too long a name
    raise RecipeError(f"port {port} on {host} is in use: give another with --port" if port else f"no free port on {host} from 7860 to 7959: give one with --port")
