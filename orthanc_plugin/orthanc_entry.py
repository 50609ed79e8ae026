"""The script Orthanc's Python plugin loads. It only makes our virtual environment
importable and hands over to orthanc_plugin.plugin: Orthanc puts this folder first on
sys.path, so nothing here may be named like a standard-library module."""

import json
import site

import orthanc

site.addsitedir(json.loads(orthanc.GetConfiguration())["Northanc"]["SitePackages"])

from orthanc_plugin.plugin import install

install()
