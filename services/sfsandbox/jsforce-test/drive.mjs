// Drives the sandbox with jsforce, a Salesforce client written outside this
// project: what it needs from an org (a bare-origin instance_url, paging,
// collections, Bulk API 2.0) is what a real org gives. Run by
// ../jsforce_test.go, which seeds the org and checks its records after.
//
// Env: SB_ORG_URL (the org's origin), SB_CLIENT_ID, SB_CLIENT_SECRET,
// SB_MISSING_ID (a well-formed Contact id that does not exist).
// Prints one JSON object on stdout.
import jsforce from 'jsforce';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};

const conn = new jsforce.Connection({
  oauth2: { loginUrl: env('SB_ORG_URL'), clientId: env('SB_CLIENT_ID'), clientSecret: env('SB_CLIENT_SECRET') },
  version: '62.0',
});
// jsforce 3 does the client credentials flow itself: authorize() posts the
// grant to <loginUrl>/services/oauth2/token and keeps instance_url.
await conn.authorize({ grant_type: 'client_credentials' });

// A small batch size so autoFetch must follow nextRecordsUrl.
const result = await conn.query('SELECT Id, Email, HasOptedOutOfEmail FROM Contact ORDER BY Id', {
  autoFetch: true,
  maxFetch: 100000,
  headers: { 'Sforce-Query-Options': 'batchSize=200' },
});
const contacts = result.records;

const toOptOut = contacts.slice(0, 3).map((r) => r.Id);
const results = await conn.sobject('Contact').update(
  [...toOptOut.map((Id) => ({ Id, HasOptedOutOfEmail: true })), { Id: env('SB_MISSING_ID'), HasOptedOutOfEmail: true }],
  { allOrNone: false },
);

conn.bulk2.pollInterval = 20; // the sandbox moves a job one state per poll
const stream = await conn.bulk2.query('SELECT Id, HasOptedOutOfEmail FROM Contact WHERE HasOptedOutOfEmail = true');
const bulkIds = await new Promise((resolve, reject) => {
  const ids = [];
  stream.on('record', (r) => ids.push(r.Id));
  stream.on('end', () => resolve(ids));
  stream.on('error', reject);
});

process.stdout.write(JSON.stringify({
  instanceUrl: conn.instanceUrl,
  totalSize: result.totalSize,
  fetched: contacts.length,
  updated: results.filter((r) => r.success).map((r) => r.id),
  failed: results.filter((r) => !r.success).map((r) => ({ id: r.id ?? null, errors: r.errors })),
  bulkOptedOut: bulkIds,
}) + '\n');
