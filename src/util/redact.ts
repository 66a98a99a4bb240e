/** Removes credentials from text before it reaches output: URLs with userinfo, Authorization headers, tokens. */
export function redact(text: string): string {
  return text
    .replace(/(\w+:\/\/)[^/\s:@]+:[^/\s@]+@/g, '$1***@')
    .replace(/(authorization:\s*)(basic|bearer)\s+\S+/gi, '$1$2 ***')
    .replace(/("?(?:password|secret|token|access_token|refresh_token|identitytoken|auth)"?\s*[:=]\s*)"[^"]*"/gi, '$1"***"');
}
