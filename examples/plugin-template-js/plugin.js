// A Wasp plugin in JavaScript: lets in the client whose username is configured, defers every other one.
//
// componentize-js builds it against the world `authenticator-plugin` of wit/plugin.wit: each exported
// interface is an exported object named after it (`plugin`, `authenticator`).

let username = null;

export const plugin = {
  init(config) {
    const settings = JSON.parse(config || '{}');
    const unknown = Object.keys(settings).filter((k) => k !== 'username').sort();
    if (unknown.length > 0) throw `plugin config: unknown field \`${unknown[0]}\`, expected \`username\``;
    if (typeof settings.username !== 'string') throw 'plugin config: missing field `username`';
    username = settings.username;
    return {
      hooks: { authenticate: true, authorizePublish: false, authorizeSubscribe: false, transform: false },
      publishFilters: [],
    };
  },
};

export const authenticator = {
  authenticate(request) {
    return request.client.username === username ? { tag: 'allow', val: [] } : { tag: 'defer' };
  },
};
