#!/usr/bin/env bash
# Build the ROS 2 interface package ros2_ws/src/mbmpo_interfaces against the ROS 2 Jazzy
# PyPI wheels installed in a virtual environment, and install it into that environment.
#
#   usage: scripts/build_interfaces.sh VENV_DIR
#
# Prerequisites: VENV_DIR/bin/python with requirements-ros.txt installed; cmake, gcc and
# g++ on PATH (Debian: apt-get install cmake g++); the interpreter's Python.h.
#
# Afterwards `VENV_DIR/bin/python -c "from mbmpo_interfaces.msg import Transition"` works
# with no extra environment variables: the Python package goes to the venv's site-packages
# and the C libraries to VENV_DIR/lib, which the ros-wheels-bootstrapper .pth file adds to
# LD_LIBRARY_PATH (it re-executes every Python process of the venv once to do that).
#
# Idempotent: re-running re-patches nothing that is already patched, rebuilds only what
# changed (plain cmake incremental build in build/mbmpo_interfaces) and reinstalls.
set -euo pipefail

die() { echo "build_interfaces: ERROR: $*" >&2; exit 1; }
log() { echo "build_interfaces: $*"; }

[ $# -eq 1 ] || die "usage: $0 VENV_DIR"
[ -d "$1" ] || die "venv directory '$1' does not exist (create it and install requirements-ros.txt first)"
VENV=$(cd "$1" && pwd)
PY="$VENV/bin/python"
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PKG_NAME=mbmpo_interfaces
SRC="$REPO/ros2_ws/src/$PKG_NAME"
BUILD="$REPO/build/$PKG_NAME"

# Start from a clean ROS environment: a sourced /opt/ros setup or a parent process that was
# already bootstrapped for another venv must not leak in. (The bootstrapper skips its
# re-exec when _ROS_WHEELS_BOOTSTRAP_COMPLETE is set, so clear it for this venv's Pythons.)
unset _ROS_WHEELS_BOOTSTRAP_COMPLETE PYTHONPATH AMENT_PREFIX_PATH CMAKE_PREFIX_PATH COLCON_PREFIX_PATH ROS_DISTRO || true

# ---------------------------------------------------------------------------------------
# 1. Check the tools and the venv.
# ---------------------------------------------------------------------------------------
[ -x "$PY" ] || die "$PY not found: '$VENV' is not a virtual environment"
[ -f "$SRC/package.xml" ] || die "package source not found at $SRC"
for tool in cmake cc c++; do
    command -v "$tool" >/dev/null || die "'$tool' not found on PATH (Debian: apt-get install -y cmake g++)"
done

# Python modules the rosidl generators and ament need (from requirements-ros.txt).
if ! err=$("$PY" -c "import ament_package, catkin_pkg, em, lark, numpy, rosidl_adapter, rosidl_generator_py, rclpy" 2>&1); then
    echo "$err" | tail -n 3 >&2
    die "the ROS wheels are missing from $VENV; run: $PY -m pip install -r $REPO/requirements-ros.txt"
fi
[ -f "$VENV/share/rosidl_default_generators/cmake/rosidl_default_generatorsConfig.cmake" ] \
    || die "rosidl_default_generators is not installed in $VENV; run: $PY -m pip install -r $REPO/requirements-ros.txt"

# Paths of *this* environment: C headers of the interpreter, numpy's headers, site-packages.
{ read -r PY_INC; read -r NP_INC; read -r SITE; } < <("$PY" -c '
import sysconfig, numpy
print(sysconfig.get_paths()["include"], numpy.get_include(), sysconfig.get_paths()["purelib"], sep="\n")')
[ -f "$PY_INC/Python.h" ] || die "Python.h not found in $PY_INC (Debian system Python: apt-get install -y python3-dev)"
[ -d "$NP_INC/numpy" ] || die "numpy headers not found in $NP_INC"

# ---------------------------------------------------------------------------------------
# 2. Fix the wheels' exported CMake targets.
#    The *__rosidl_generator_py targets exported by the message wheels (std_msgs,
#    builtin_interfaces, ...) name the include directories of the host that built the
#    wheels: /opt/python/cp311-cp311/include/python3.11 and
#    /opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include.
#    CMake refuses imported targets with non-existent include dirs, so point them at this
#    environment's. This edits the venv's copy only; a reinstall of a wheel undoes it and
#    the next run of this script redoes it.
# ---------------------------------------------------------------------------------------
mapfile -t to_patch < <(grep -rlE '/opt/python/cp3[0-9]+-cp3[0-9]+/' "$VENV/share" --include='*.cmake' 2>/dev/null || true)
if [ "${#to_patch[@]}" -gt 0 ]; then
    log "pointing ${#to_patch[@]} exported CMake file(s) at this venv's Python/numpy include dirs"
    sed -i -E \
        -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/_core/include#${NP_INC}#g" \
        -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#${PY_INC}#g" \
        "${to_patch[@]}"
    if left=$(grep -rlE '/opt/python/' "$VENV/share" --include='*.cmake'); then
        die "unexpected wheel-build-host paths remain in: $left"
    fi
fi

# ---------------------------------------------------------------------------------------
# 3. Configure (only the venv is searched for ROS packages) and build.
# ---------------------------------------------------------------------------------------
# A build dir configured for another venv or source path (repo moved) is wiped, not reused.
if [ -f "$BUILD/CMakeCache.txt" ] && ! { grep -qxF "CMAKE_INSTALL_PREFIX:PATH=$VENV" "$BUILD/CMakeCache.txt" &&
        grep -qxF "CMAKE_HOME_DIRECTORY:INTERNAL=$SRC" "$BUILD/CMakeCache.txt"; }; then
    log "build dir was configured for another venv or source path; starting afresh"
    rm -rf "$BUILD"
fi
mkdir -p "$BUILD"

export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV" PATH="$VENV/bin:$PATH"
start=$(date +%s)
log "configuring $SRC (log: $BUILD/configure.log)"
if ! cmake -S "$SRC" -B "$BUILD" \
        -DCMAKE_INSTALL_PREFIX="$VENV" \
        -DCMAKE_BUILD_TYPE=Release \
        -DBUILD_TESTING=OFF \
        -DPython3_EXECUTABLE="$PY" \
        -DPython3_FIND_VIRTUALENV=ONLY \
        >"$BUILD/configure.log" 2>&1; then
    grep -v '^-- ' "$BUILD/configure.log" | tail -n 30 >&2
    die "cmake configure failed (full log: $BUILD/configure.log). A 'Could not find a package configuration file provided by X' means a ROS build wheel is missing: $PY -m pip install -r $REPO/requirements-ros.txt"
fi

log "building (log: $BUILD/build.log)"
if ! cmake --build "$BUILD" --parallel "$(nproc)" >"$BUILD/build.log" 2>&1; then
    grep -E -B2 -A8 'error|Error' "$BUILD/build.log" | tail -n 40 >&2
    die "build failed (full log: $BUILD/build.log)"
fi

# ---------------------------------------------------------------------------------------
# 4. Install into the venv. Earlier installs are removed first so that a message deleted
#    from msg/ does not linger in the venv.
# ---------------------------------------------------------------------------------------
rm -rf "$SITE/$PKG_NAME" "$SITE/$PKG_NAME"-*.egg-info "$VENV/share/$PKG_NAME" "$VENV/include/$PKG_NAME"
rm -f "$VENV/lib/lib${PKG_NAME}__"*.so
log "installing into $VENV"
if ! cmake --install "$BUILD" >"$BUILD/install.log" 2>&1; then
    tail -n 20 "$BUILD/install.log" >&2
    die "install failed (full log: $BUILD/install.log)"
fi
[ -f "$SITE/$PKG_NAME/msg/__init__.py" ] || die "Python package was not installed to $SITE/$PKG_NAME (see $BUILD/install.log)"
ls "$VENV/lib/lib${PKG_NAME}__rosidl_typesupport_c.so" >/dev/null 2>&1 \
    || die "typesupport libraries were not installed to $VENV/lib (see $BUILD/install.log)"

# ---------------------------------------------------------------------------------------
# 5. Smoke test in a fresh interpreter, without any ROS variables: import the messages
#    and round-trip one through the CDR serializer (this loads the C typesupport).
# ---------------------------------------------------------------------------------------
if ! out=$(env -u LD_LIBRARY_PATH "$PY" - <<'EOF' 2>&1
from mbmpo_interfaces.msg import BundleFile, PolicyBundle, Transition, TransitionBatch
from rclpy.serialization import deserialize_message, serialize_message

t = Transition(episode_id=1, step=2, policy_id="meta", obs=[0.5], action=[1.0], reward=1.0,
               next_obs=[0.25], terminated=False, truncated=True)
assert deserialize_message(serialize_message(t), Transition) == t
b = PolicyBundle(policy_version="v", manifest_json="{}",
                 files=[BundleFile(name="a", sha256="0" * 64, data=b"xyz")])
assert deserialize_message(serialize_message(b), PolicyBundle) == b
EOF
); then
    echo "$out" | tail -n 15 >&2
    die "installed, but the smoke test (import + serialize round-trip) failed"
fi
log "OK: $PKG_NAME built and installed into $VENV in $(( $(date +%s) - start )) s"
