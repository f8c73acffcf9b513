"""The AI-generation label: an XMP packet with IPTC's digital source type and the creator tool.

Photo sites and the EU AI Act's marking rule look for ``Iptc4xmpExt:DigitalSourceType``
(https://cv.iptc.org/newscodes/digitalsourcetype/).  The packet is plain text built from constants
and the localflux version: no dates, no document ids, so the same inputs give the same bytes.
"""

from __future__ import annotations

import re

from .. import __version__

# A picture made by a generative model from a text prompt (text-to-image, and upscales of one).
TRAINED = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
# A picture that combines a real capture with generated content (upscaled photo, img2img, inpaint).
COMPOSITE = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
SOURCE_TYPES = (TRAINED, COMPOSITE)

# The fixed packet id of the XMP specification (part 1, 7.3.2), not a per-file UUID.
_PACKET_ID = "W5M0MpCehiHzreSzNTczkc9d"
_NS = ('xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
       'xmlns:xmp="http://ns.adobe.com/xap/1.0/"')
_MAX_MERGE = 1 << 20  # a foreign packet larger than this is replaced rather than edited


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def creator_tool() -> str:
    return f"localflux {__version__}"


def description(source_type: str) -> str:
    """The ``rdf:Description`` element carrying the label."""
    if source_type not in SOURCE_TYPES:
        raise ValueError(f"unknown digital source type {source_type!r}")
    return (f'<rdf:Description rdf:about="" {_NS}>'
            f"<Iptc4xmpExt:DigitalSourceType>{source_type}</Iptc4xmpExt:DigitalSourceType>"
            f"<xmp:CreatorTool>{_escape(creator_tool())}</xmp:CreatorTool>"
            "</rdf:Description>")


def packet(source_type: str) -> str:
    """A complete XMP packet (UTF-8 text for an uncompressed iTXt ``XML:com.adobe.xmp`` chunk)."""
    return (f'<?xpacket begin="\ufeff" id="{_PACKET_ID}"?>'
            '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
            '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            f"{description(source_type)}"
            "</rdf:RDF></x:xmpmeta>"
            '<?xpacket end="w"?>')


_OURS = re.compile(r"\s+(?:Iptc4xmpExt:DigitalSourceType|xmp:CreatorTool)=\"[^\"]*\""
                   r"|<(Iptc4xmpExt:DigitalSourceType|xmp:CreatorTool)>[^<]*</\1>")


def merge(existing: str | None, source_type: str) -> str:
    """``existing`` (a photo's own XMP, kept) with the label added; a fresh packet when there is none.

    The label's two properties are removed from the existing packet (the standard prefixes, as
    written by Adobe, exiftool and cameras) and added in a description of their own; a packet that
    cannot be edited that way (neither one ``</rdf:RDF>`` nor one ``</x:xmpmeta>``, or huge) is replaced.
    """
    if not existing or len(existing) > _MAX_MERGE:
        return packet(source_type)
    cleaned = _OURS.sub("", existing)
    if cleaned.count("</rdf:RDF>") == 1:
        return cleaned.replace("</rdf:RDF>", description(source_type) + "</rdf:RDF>")
    if cleaned.count("</x:xmpmeta>") == 1 and "</rdf:RDF>" not in cleaned:  # descriptions without an rdf:RDF
        rdf = f'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">{description(source_type)}</rdf:RDF>'
        return cleaned.replace("</x:xmpmeta>", rdf + "</x:xmpmeta>")
    return packet(source_type)


_TYPE = re.compile(r"DigitalSourceType(?:>|=\")\s*([^<\"\s]+)")


def read_source_type(xmp_text: str | None) -> str | None:
    """The digital source type a packet declares (any tool's), or None."""
    if not xmp_text:
        return None
    match = _TYPE.search(xmp_text[:_MAX_MERGE])
    return match.group(1) if match else None
