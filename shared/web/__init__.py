"""What every service's pages share: the catalogue (Bahasa Indonesia first, English on a
switch), the templates' base layout and macros, the assets, CSRF, the security headers
and local time (WIB, WITA, WIT). Pages are entry points: they translate forms to the
service layer and its answers to HTML, like the JSON routes do."""
