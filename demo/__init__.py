"""The Gradio demo: ``python demo/app.py`` (see app.py); the logic lives in small modules beside it.

``imaging`` decodes uploads, ``fer_utils.faces`` finds the face, ``registry`` loads the models,
``inference`` predicts and explains, ``about`` writes the model-card panel, ``app`` is the UI.
"""
