// The API body for each action button of the issue pages.
export const ACTIONS = {
  resolve: { status: "resolved" },
  resolve_in_next_release: { status: "resolved", resolve_in_next_release: true },
  ignore: { status: "ignored" },
  reopen: { status: "unresolved" },
};
