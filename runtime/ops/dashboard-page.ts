export const DASHBOARD_HTML = '';
export const DASHBOARD_JS = '';
export const DASHBOARD_CSS = '';
