"""MuJoCo's headless renderer: set-up without a GPU, and errors that say how
to fix a missing OpenGL backend. Used by wrappers.DeepMindControl."""

import ctypes
import os
import sysconfig

# Headless rendering by default. It must be set before dm_control is imported,
# because dm_control picks its OpenGL backend at import time.
os.environ.setdefault('MUJOCO_GL', 'egl')

_RENDERER_HELP = (
    'MuJoCo could not start its OpenGL renderer (MUJOCO_GL={backend!r}). '
    'Install the system libraries of a headless backend, on Debian/Ubuntu: '
    '`apt-get install libegl1 libgl1-mesa-dri` for MUJOCO_GL=egl or '
    '`apt-get install libosmesa6` for MUJOCO_GL=osmesa; or select another '
    'backend by setting MUJOCO_GL to one of egl, osmesa, glfw (glfw needs a '
    'display). Original error: {error_type}: {error}')

# Whether a render has succeeded in this process: after that, errors are not
# about the backend and pass through unchanged.
_rendered = False


def renderer_error(error):
  """Returns a RuntimeError that explains how to fix a failed renderer."""
  message = _RENDERER_HELP.format(
      backend=os.environ.get('MUJOCO_GL', ''),
      error_type=type(error).__name__, error=error)
  return RuntimeError(message)


def import_suite():
  """Imports dm_control.suite, explaining renderer failures."""
  isolate_mesa_llvm()
  try:
    # dm_control loads the OpenGL backend named by MUJOCO_GL in this import,
    # so a missing system library surfaces here as an obscure traceback.
    import dm_control._render  # pylint: disable=unused-import,import-outside-toplevel
  except Exception as e:
    raise renderer_error(e) from e
  from dm_control import suite  # pylint: disable=import-outside-toplevel
  return suite


def render(physics, *args, **kwargs):
  """physics.render(...), explaining a failure of the first render."""
  global _rendered
  try:
    image = physics.render(*args, **kwargs)
  except Exception as e:
    if _rendered:
      raise
    # The OpenGL context is created on the first render, which is where a
    # missing or broken backend fails.
    raise renderer_error(e) from e
  _rendered = True
  return image


def isolate_mesa_llvm():
  """Loads Mesa's software OpenGL driver so that it binds its own LLVM.

  Without a GPU, MUJOCO_GL=egl renders with Mesa's llvmpipe, which uses LLVM.
  TensorFlow exports the symbols of the LLVM copy it bundles, so once both are
  in one process, Mesa's calls resolve into TensorFlow's copy and crash (a
  segfault on the first render). Loading the driver with RTLD_DEEPBIND before
  the first render makes it prefer its own dependencies. TensorFlow has to be
  imported before the first render all the same: its static initializers crash
  on an LLVM that Mesa has already set up.
  """
  if os.environ.get('MUJOCO_GL') != 'egl' or not hasattr(os, 'RTLD_DEEPBIND'):
    return
  multiarch = sysconfig.get_config_var('MULTIARCH') or ''
  directories = os.environ.get('LIBGL_DRIVERS_PATH', '').split(':') + [
      f'/usr/lib/{multiarch}/dri', '/usr/lib64/dri', '/usr/lib/dri']
  for directory in filter(None, directories):
    path = os.path.join(directory, 'swrast_dri.so')
    if os.path.exists(path):
      try:
        ctypes.CDLL(path, mode=os.RTLD_NOW | os.RTLD_DEEPBIND)
      except OSError:
        pass  # The first render reports a broken renderer more clearly.
      return
