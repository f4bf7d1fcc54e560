"""The browser side of facecast, shipped as package data: the ``<facecast-avatar>`` widget
(``facecast-avatar.js``), the demo page (``index.html``), the kiosk page (``kiosk.html``) and the
control protocol (``PROTOCOL.md``). ``facecast serve`` finds them with
``importlib.resources.files("web")``, so a non-editable install serves the widget too."""
