/**
 * `troupe init [dir]`: scaffolds a working app (package.json depending on troupe, a config
 * file, one actor, one given/when/then test, a short README).
 */

export interface ScaffoldOptions {
  /** The version of troupe the app's package.json depends on. */
  troupeVersion: string;
  /** Write into a folder that is not empty. */
  force?: boolean;
}

export async function scaffold(dir: string, options: ScaffoldOptions): Promise<void> {
  void dir;
  void options;
  throw new Error('troupe init is not built yet');
}
