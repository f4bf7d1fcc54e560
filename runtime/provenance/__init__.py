"""Responsible synthetic media: the visible disclosure badge (``disclosure``), the invisible
watermark in every frame (``watermark``), C2PA content credentials on every file (``c2pa``) and
``facecast verify``, which reads both (``verify``). Consent is checked where bundles are loaded
(``avatars.bundle.require_consent``). DESIGN.md, "Responsible synthetic media"."""
