#!/usr/bin/env bash
# System packages napari-dicom's GUI and fidelity tests need on Debian/Ubuntu:
#   xvfb + Mesa (napari needs an OpenGL context; Xvfb gives a virtual screen),
#   the X/xcb libraries Qt 6 loads, dcmtk (dcmj2pnm, the second opinion on rendering), and
#   orthanc + orthanc-dicomweb (the real DICOMweb server the DICOMweb tests start), and
#   xdotool (real X mouse input for the window/level drag test under Xvfb).
set -euo pipefail
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  xvfb xauth libgl1-mesa-dri libgl1 libegl1 libglib2.0-0 libfontconfig1 libdbus-1-3 \
  libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 \
  libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 \
  dcmtk orthanc orthanc-dicomweb xdotool > /dev/null
echo "system packages installed: xvfb, Mesa, Qt's X libraries, dcmtk ($(command -v dcmj2pnm)), orthanc ($(command -v Orthanc)), xdotool ($(command -v xdotool))"
