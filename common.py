"""What the model-zoo command lines build_engine.py and inference.py share, as the model zoo's
own common.py does: where an engine runs. Both take ``--rpc HOST:PORT:KEY`` and open one session
on the device it names; everything else they share is the package's (``svtr_toolkit.cli`` for
the command-line vocabulary, ``svtr_toolkit.runtime`` for opening engines).
"""


def remote_device(address):
    """The device ``--rpc`` names (an ``rpc.RemoteDevice``: one session on a free server under the
    key, whose CPU and TVM version it described), or None for this machine."""
    if address is None:
        return None
    from svtr_toolkit import rpc

    return rpc.connect(address)
