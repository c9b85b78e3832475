"""fer_utils: the logic behind the FER lab's notebooks and demo, kept in one place.

Modules: ``data`` (loading FER2013), ``pipeline`` (tf.data input and augmentation),
``models`` (the five models), ``training``, ``model_io`` (atomic saving and model cards),
``evaluation`` (metrics and plots) and ``explain`` (saliency, occlusion, Grad-CAM).
Submodules are imported on demand so ``import fer_utils`` stays light.
"""

__version__ = "0.1.0"
