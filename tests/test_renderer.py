"""Tests of renderer.py: errors that say how to fix the renderer.

Rendering itself, in and beside TensorFlow, is tested through
wrappers.DeepMindControl in test_wrappers.py.
"""

from support import renderer


def test_renderer_error_text():
  error = renderer.renderer_error(AttributeError('no glGetError'))
  assert isinstance(error, RuntimeError)
  text = str(error)
  for needle in ('libegl1 libgl1-mesa-dri', 'libosmesa6', 'egl, osmesa, glfw',
                 'no glGetError'):
    assert needle in text
