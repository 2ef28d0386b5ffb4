"""Category-level dense correspondence through latent-conditioned deformation fields.

A generator of NeRF instances of one category (:mod:`.generator`, :mod:`.families`) supplies
endless training instances; a dual deformation field (:mod:`.deformation`) conditioned on each
instance's latent maps instance points to a shared template and back, trained with generator
features as local descriptors (:mod:`.losses`, :mod:`.train`). Transfers and metrics live in
:mod:`.match`, :mod:`.transfer` and :mod:`.metrics`. Imports only :mod:`n3f.render` and
:mod:`n3f.errors` (and :mod:`n3f.io`, :mod:`n3f.progress`, :mod:`n3f.config` helpers).
"""
