export { RegistryClient, RegistryRepository, MANIFEST_ACCEPT, type RegistryClientOptions, type ManifestResult } from './client.js';
export {
  DockerConfigCredentials,
  StaticCredentials,
  anonymousCredentials,
  dockerConfigDir,
  configKeyFor,
  runCredentialHelper,
  DOCKER_HUB_CONFIG_KEY,
  type Credential,
  type CredentialSource,
  type DockerConfigOptions,
} from './credentials.js';
export { loadRegistrySettings, parseRegistrySettings, settingsFor, endpointFor, defaultConfigPath, timeoutsFromEnv, type HostSettings, type RegistrySettings, type Endpoint, type LoadRegistrySettingsOptions } from './settings.js';
export { parseChallenge, mergeScopes, retryAfterMs, pullScope, pushScope, type Challenge } from './auth.js';
export { login, logout, normalizeRegistryName, type LoginOptions, type LoginResult } from './login.js';
