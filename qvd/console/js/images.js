// Adding a disk image: from a file of the API's staging folder (copied in the background;
// its list row goes uploading -> published), or uploaded from this computer with progress.
import {call, fromStaging, upload} from './api.js';
import {h, field, dialog, clear, uid, formatNumber} from './dom.js';
import {control} from './forms.js';

export function openDiskImageDialog() {
  const osf = control({name: 'osf_id', label: 'OSF', type: 'ref', list: 'osf_get_list', required: true});
  const version = control({name: 'version', label: 'Version', hint: 'Empty: today’s date and a counter.'});
  const description = control({name: 'description', label: 'Description', type: 'textarea'});
  const group = uid('source');
  const fromStagingRadio = h('input', {type: 'radio', name: group, id: uid('r'), value: 'staging', checked: true});
  const fromFileRadio = h('input', {type: 'radio', name: group, id: uid('r'), value: 'upload'});
  const stagingSelect = h('select', {name: 'staging'}, h('option', {value: ''}, 'Loading…'));
  const fileInput = h('input', {type: 'file', name: 'file'});
  const stagingField = field('File in the staging folder', stagingSelect);
  const fileField = field('File on this computer', fileInput);
  fileField.hidden = true;
  const progress = h('progress', {max: 100, value: 0, 'aria-label': 'Upload progress'});
  const progressText = h('span', {'aria-live': 'polite'});
  const progressBox = h('div', {class: 'progress', hidden: true}, progress, ' ', progressText);

  call('dis_in_staging').then((answer) => {
    clear(stagingSelect, answer.rows.length ? h('option', {value: ''}, 'Choose…') : h('option', {value: ''}, 'The staging folder is empty'),
      answer.rows.map((r) => h('option', {value: r.name}, r.name)));
  }).catch((e) => clear(stagingSelect, h('option', {value: ''}, e.message)));

  function switchSource() {
    stagingField.hidden = !fromStagingRadio.checked;
    fileField.hidden = fromStagingRadio.checked;
  }
  fromStagingRadio.addEventListener('change', switchSource);
  fromFileRadio.addEventListener('change', switchSource);

  const body = [
    osf.el,
    h('fieldset', {class: 'source'}, h('legend', {}, 'Source'),
      h('div', {class: 'field check'}, fromStagingRadio, h('label', {for: fromStagingRadio.id}, 'The staging folder of the API')),
      h('div', {class: 'field check'}, fromFileRadio, h('label', {for: fromFileRadio.id}, 'Upload from this computer')),
      stagingField, fileField),
    version.el, description.el, progressBox,
  ];
  return dialog('Add disk image', body, {
    submit: 'Add',
    onSubmit: async () => {
      const osfId = await osf.read();
      if (!osfId) throw new Error('Choose the OSF the image is for.');
      const args = {osf_id: osfId};
      for (const c of [version, description]) {
        const value = await c.read();
        if (value) args[c.def.name] = value;
      }
      if (fromStagingRadio.checked) {
        if (!stagingSelect.value) throw new Error('Choose a file of the staging folder.');
        args.disk_image = stagingSelect.value;
        const answer = await fromStaging(args);
        return answer.rows[0];
      }
      const file = fileInput.files[0];
      if (!file) throw new Error('Choose the file to upload.');
      args.disk_image = file.name;
      progressBox.hidden = false;
      const answer = await upload(args, file, (sent, total) => {
        const percent = total ? Math.floor((100 * sent) / total) : 0;
        progress.value = percent;
        progressText.textContent = `${percent}% (${formatNumber(sent)} of ${formatNumber(total)} bytes)`;
      });
      return answer.rows[0];
    },
  });
}
