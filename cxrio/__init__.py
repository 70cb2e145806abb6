"""Django-free image I/O shared by the web side and mlworker: decoding PNG/JPEG/DICOM
radiographs (images, dicom), the binary mask codec (masks) and the QaTa-COV19 folder layout
(layout). Nothing here imports Django, annotation or a deep-learning framework."""
