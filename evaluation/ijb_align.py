"""ArcFace's face alignment: five landmarks onto a fixed 112x112 template.

IJB's loose crops come with five landmarks per face (eyes, nose tip, mouth corners,
from a detector). insightface's eval_ijbc.py fits the similarity transform (rotation,
uniform scale, translation) that best maps them, in the least-squares sense, onto
ArcFace's template, the landmarks of the mean face in a 112x112 crop, and warps the
image with it. The fit here is Umeyama's closed form (IEEE TPAMI 13(4), 1991) with
scale, what skimage's `SimilarityTransform.estimate` computes; the warp is
cv2.warpAffine with its default bilinear interpolation and black outside the image,
the reference's call. The fit runs in float64; skimage versions that keep float32
landmarks in float32 differ by ~1e-6 px, below the warp's 1/32 px grid. OpenCV 4.x
warps in that fixed-point grid (4.5.5 and 4.14 give the same crops); 5.x interpolates in
float (opencv/opencv#27280) and changes ~5% of the pixels by up to 3 grey levels, so
OpenCV is pinned to a 4.x release.

The crop stays BGR, as cv2.imread returns it: this project's networks take BGR
(data.image_ops.decode_image, as the original InsightFace_TF); insightface converts to
RGB only because its PyTorch models were trained on RGB.

Typical use:
    image = read_image(ijb_meta.image_file(root, meta.image_names[k]))
    crop = align(image, meta.landmarks[k])        # uint8 [112, 112, 3] BGR
"""
import cv2
import numpy as np

from evaluation.ijb_meta import IJBFormatError

# (x, y) of the left eye, right eye, nose tip, left and right mouth corners in a
# 112x112 crop: the 96x112 template of SphereFace/ArcFace moved 8 px right to centre
# it in a square, in float32 as the reference keeps it.
ARCFACE_TEMPLATE = np.array([[30.2946, 51.6963],
                             [65.5318, 51.5014],
                             [48.0252, 71.7366],
                             [33.5493, 92.3655],
                             [62.7299, 92.2041]], np.float32)
ARCFACE_TEMPLATE[:, 0] += 8.0
ARCFACE_TEMPLATE.setflags(write=False)
CROP_SIZE = (112, 112)  # (height, width) the template is drawn for


def similarity_transform(landmarks, template=ARCFACE_TEMPLATE):
    """The least-squares similarity taking `landmarks` onto `template` (Umeyama).

    Minimises sum_i |template_i - (s R landmarks_i + t)|^2 over a rotation R (never a
    reflection), a scale s and a translation t.

    Args:
      landmarks: float [K, 2], (x, y) in the source image, K >= 2.
      template: float [K, 2], where they should land.
    Returns:
      float64 [2, 3], [s R | t]: the matrix cv2.warpAffine takes.
    Raises:
      ValueError: shapes differ or are not [K, 2]; all landmarks at one point.
    """
    source = np.asarray(landmarks, np.float64)
    target = np.asarray(template, np.float64)
    if source.ndim != 2 or source.shape[1] != 2 or source.shape != target.shape:
        raise ValueError('landmarks %s and template %s must both be [K, 2]'
                         % (source.shape, target.shape))
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    source_centred, target_centred = source - source_mean, target - target_mean
    covariance = target_centred.T @ source_centred / source.shape[0]
    signs = np.ones(2)
    if np.linalg.det(covariance) < 0:
        signs[1] = -1.0  # the best fit would mirror; take the best rotation instead
    u, singular, vt = np.linalg.svd(covariance)
    rank = np.linalg.matrix_rank(covariance)
    if rank == 0:
        raise ValueError('landmarks %s all lie at one point: no similarity fits them'
                         % source.tolist())
    if rank == 1 and np.linalg.det(u) * np.linalg.det(vt) > 0:
        rotation = u @ vt  # collinear points: the sign of a zero singular value is free
    elif rank == 1:
        rotation = u @ np.diag([1.0, -1.0]) @ vt
    else:
        rotation = u @ np.diag(signs) @ vt
    scale = singular @ signs / source_centred.var(axis=0).sum()
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = target_mean - scale * rotation @ source_mean
    return matrix


def align(image_bgr, landmarks, size=CROP_SIZE):
    """The face crop ArcFace embeds: `image_bgr` warped so that its landmarks fall on
    ARCFACE_TEMPLATE.

    Args:
      image_bgr: uint8 [H, W, 3], BGR (cv2.imread).
      landmarks: float [5, 2], (x, y) in `image_bgr`.
      size: (height, width) of the crop; the template is in 112x112 coordinates and
        is not rescaled (the reference's Embedding.image_size).
    Returns:
      uint8 [height, width, 3] BGR; 0 where the crop leaves the image.
    """
    matrix = similarity_transform(landmarks, ARCFACE_TEMPLATE)
    return cv2.warpAffine(image_bgr, matrix, (size[1], size[0]), borderValue=0.0)


def read_image(path):
    """uint8 [H, W, 3] BGR of an image file, decoded as the reference does (cv2.imread,
    which also applies a JPEG's EXIF orientation).

    Raises:
      IJBFormatError: the file is missing or does not decode.
    """
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise IJBFormatError('%s: not a readable image (cv2.imread failed)' % path)
    return image
