"""The portal's pages, one blueprint per area."""

from portal.pages import account, admin, institutional, jobs, notebooks, oauth, ohif, pacs, projects, readings, viewer

BLUEPRINTS = (account.blueprint, admin.blueprint, projects.blueprint, viewer.blueprint, jobs.blueprint, pacs.blueprint,
               ohif.blueprint, institutional.blueprint, readings.blueprint, oauth.blueprint, notebooks.blueprint)
