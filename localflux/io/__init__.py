"""Reading and writing the files localflux produces: PNG chunks (:mod:`.png`), the XMP
AI-generation label (:mod:`.xmp`) and opt-in C2PA Content Credentials (:mod:`.c2pa`)."""
