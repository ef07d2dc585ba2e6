// Docker image references: which registry host an image comes from, by Docker's own rule.

export interface ImageReference {
  /** Registry host (with port), "docker.io" for Docker Hub. */
  readonly registry: string;
  /** Repository path inside the registry, e.g. "team/app" (Hub's "library/" added for single names). */
  readonly repository: string;
  readonly tag: string | null;
  readonly digest: string | null;
}

const REFERENCE =
  /^(?:(?<registry>(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:]+\])(?::\d{1,5})?)\/)?(?<path>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)(?::(?<tag>[\w][\w.-]{0,127}))?(?:@(?<digest>sha256:[a-f0-9]{64}))?$/;

const REPOSITORY_PATH = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;

/** null when the text is not an image reference. */
export function parseImageReference(text: string): ImageReference | null {
  const value = text.trim();
  if (value.length === 0 || value.length > 512) return null;
  const match = REFERENCE.exec(value);
  if (!match?.groups) return null;
  let registry = match.groups.registry;
  let repository = match.groups.path ?? '';
  // Docker's rule: the first component is a registry host only if it has a dot or a port, or is "localhost".
  if (
    registry !== undefined &&
    !/[.:]/.test(registry) &&
    registry !== 'localhost' &&
    !registry.startsWith('[')
  ) {
    repository = `${registry}/${repository}`;
    registry = undefined;
  }
  if (!REPOSITORY_PATH.test(repository)) return null;
  if (registry === undefined) {
    registry = 'docker.io';
    if (!repository.includes('/')) repository = `library/${repository}`;
  }
  return {
    registry: registry.toLowerCase(),
    repository,
    tag: match.groups.tag ?? null,
    digest: match.groups.digest ?? null,
  };
}
