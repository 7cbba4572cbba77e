#!/usr/bin/env node
// A real OpenID Provider for the console's sign-in test: panva's `oidc-provider` (npm,
// OpenID-certified), with its development login and consent screens. One public client
// (`fieldvox-console`, authorization code with PKCE); RS256 id_tokens carry the `tenant`
// and `role` claims fieldvox reads (auth.jwks.tenant_claim / role_claim).
//
//   node tests/clients/oidc_provider.mjs --port 9400 --redirect http://127.0.0.1:8080/console \
//        --tenant acme --role admin
//
// Prints one JSON line ({"issuer": ...}) once it listens. Needs oidc-provider under
// $NODE_PATH (scripts/setup.sh installs it).
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const args = Object.fromEntries(process.argv.slice(2).reduce((pairs, v, i, all) => (i % 2 ? pairs : [...pairs, [v.replace(/^--/, ''), all[i + 1]]]), []));
for (const key of ['port', 'redirect', 'tenant', 'role']) {
  if (!args[key]) { process.stderr.write(`missing --${key}\n`); process.exit(2); }
}
const modules = (process.env.NODE_PATH || '').split(path.delimiter).filter(Boolean)[0] || 'node_modules';
const { default: Provider } = await import(pathToFileURL(path.join(modules, 'oidc-provider/lib/index.js')).href);

const issuer = `http://127.0.0.1:${args.port}`;
const provider = new Provider(issuer, {
  clients: [{
    client_id: 'fieldvox-console', token_endpoint_auth_method: 'none', redirect_uris: [args.redirect],
    grant_types: ['authorization_code'], response_types: ['code'],
  }],
  claims: { openid: ['sub', 'tenant', 'role'] },
  // The id_token itself carries the claims (fieldvox verifies it; there is no userinfo call).
  conformIdTokenClaims: false,
  findAccount: (ctx, sub) => ({ accountId: sub, claims: () => ({ sub, tenant: args.tenant, role: args.role }) }),
  features: { devInteractions: { enabled: true } },
  pkce: { required: () => true },
  clientBasedCORS: () => true,
});
provider.listen(Number(args.port), '127.0.0.1');
process.stdout.write(JSON.stringify({ issuer }) + '\n');
