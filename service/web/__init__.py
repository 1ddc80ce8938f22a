"""The web page of the gateway: a static page and its assets (``static/``), served by
``router`` at ``/`` and ``/static/...`` (see README.md)."""
